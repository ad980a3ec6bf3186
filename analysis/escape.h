/* escape: text that other programs read. A growable buffer (TextBuf) the analysis writes its files
 * into, and the one escaping function of each language it writes besides gnuplot (whose strings
 * and comments are analysis/gnuplot.c's): LaTeX, Markdown, HTML, and file names.
 *
 * Invariants
 *   - Every string that reaches a .tex, .md or .html file and did not come from a literal in the
 *     code (a method, targets, a variant, a sweep name, a path, a note that quotes any of them)
 *     goes through tex_text, md_text or html_text. Values from a results database are untrusted:
 *     databases travel between machines and people.
 *   - The output of each function is inert in its language: it prints as the given text, and can
 *     end no construct it is placed in (a LaTeX group or comment, a Markdown table cell, code
 *     span or HTML comment, an HTML element or attribute value).
 *   - No control character (bytes 0x00-0x1F and 0x7F) is ever written raw: tab, newline and
 *     carriage return become a space, any other one '?' (esc_clean_char). A value is one line.
 *   - Bytes 0x80-0xFF pass through unchanged (UTF-8 text stays readable); the functions know no
 *     encoding beyond the two LaTeX conversions of tex_text.
 */
#ifndef LL_ESCAPE_H
#define LL_ESCAPE_H

#include <stddef.h>

#include "core.h"

/* ---- a growable text buffer ------------------------------------------------------------------ */

typedef struct {
    char *p;          /* NUL-terminated once anything was written; NULL before */
    size_t len, cap;
} TextBuf;

void tb_printf(TextBuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tb_puts(TextBuf *b, const char *s);
void tb_putc(TextBuf *b, char ch);
void tb_free(TextBuf *b);
/* Writes the buffer to DIR/NAME atomically (ll_write_file_atomic). */
LLStatus tb_save(const TextBuf *b, const char *dir, const char *name, LLError *err);

/* ---- escaping -------------------------------------------------------------------------------- */

/* The control-character rule above: ' ' for tab, newline and carriage return, '?' for any other
 * control character, the byte itself otherwise. */
char esc_clean_char(unsigned char ch);
/* s with esc_clean_char applied in place, for text that is printed to a terminal or kept in a
 * message (a note, a title); returns s. */
char *esc_clean(char *s);

/* LaTeX text mode: & % $ # _ { } ~ ^ \ < > | escaped or spelled out, the UTF-8 "±" and "α" as
 * math. Also safe inside a % comment. */
void tex_text(TextBuf *b, const char *s);
/* Markdown (CommonMark/GFM) inline text and table cells: \ ` * _ | < > [ ] are backslash-escaped
 * (so no link, code span, emphasis, raw HTML or cell boundary can start or end in it, and "-->"
 * cannot close an HTML comment). */
void md_text(TextBuf *b, const char *s);
/* HTML text and double- or single-quoted attribute values: & < > " ' as entities. */
void html_text(TextBuf *b, const char *s);

/* A file-name stem from s: bytes outside [A-Za-z0-9._-] become '_', a leading '.' too (no hidden
 * files, no "." or ".."), and "" becomes "_"; at most cap - 1 bytes. Distinct values may share a
 * stem: the caller makes stems unique. */
void esc_file_stem(char *out, size_t cap, const char *s);

#endif
