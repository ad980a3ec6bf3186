/* escape: see escape.h. */
#include "analysis/escape.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- TextBuf --------------------------------------------------------------------------------- */

static void tb_reserve(TextBuf *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra + 1) cap *= 2;
    b->p = ll_realloc(b->p, cap, 1);
    b->cap = cap;
}

void tb_printf(TextBuf *b, const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    LL_ASSERT(n >= 0);
    tb_reserve(b, (size_t)n);
    vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap2);
    va_end(ap2);
    b->len += (size_t)n;
}

void tb_puts(TextBuf *b, const char *s) {
    size_t n = strlen(s);
    tb_reserve(b, n);
    memcpy(b->p + b->len, s, n + 1);
    b->len += n;
}

void tb_putc(TextBuf *b, char ch) {
    tb_reserve(b, 1);
    b->p[b->len++] = ch;
    b->p[b->len] = '\0';
}

void tb_free(TextBuf *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

LLStatus tb_save(const TextBuf *b, const char *dir, const char *name, LLError *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return ll_write_file_atomic(path, b->p ? b->p : "", b->len, err);
}

/* ---- escaping -------------------------------------------------------------------------------- */

char esc_clean_char(unsigned char ch) {
    if (ch == '\t' || ch == '\n' || ch == '\r') return ' ';
    if (ch < 0x20 || ch == 0x7f) return '?';
    return (char)ch;
}

char *esc_clean(char *s) {
    for (char *p = s; *p; p++) *p = esc_clean_char((unsigned char)*p);
    return s;
}

void tex_text(TextBuf *b, const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (p[0] == 0xC2 && p[1] == 0xB1) {
            tb_puts(b, "$\\pm$");
            p++;
        } else if (p[0] == 0xCE && p[1] == 0xB1) {
            tb_puts(b, "$\\alpha$");
            p++;
        } else if (strchr("&%$#_{}", *p)) {
            tb_putc(b, '\\');
            tb_putc(b, (char)*p);
        } else if (*p == '~') {
            tb_puts(b, "\\textasciitilde{}");
        } else if (*p == '^') {
            /* Also keeps TeX's ^^ notation (^^5c is a backslash) from ever forming. */
            tb_puts(b, "\\textasciicircum{}");
        } else if (*p == '\\') {
            tb_puts(b, "\\textbackslash{}");
        } else if (*p == '<') {
            tb_puts(b, "\\textless{}"); /* OT1 fonts print '<' as an inverted exclamation mark */
        } else if (*p == '>') {
            tb_puts(b, "\\textgreater{}");
        } else if (*p == '|') {
            tb_puts(b, "\\textbar{}");
        } else {
            tb_putc(b, esc_clean_char(*p));
        }
    }
}

void md_text(TextBuf *b, const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (strchr("\\`*_|<>[]", *p)) tb_putc(b, '\\');
        tb_putc(b, esc_clean_char(*p));
    }
}

void html_text(TextBuf *b, const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '&': tb_puts(b, "&amp;"); break;
        case '<': tb_puts(b, "&lt;"); break;
        case '>': tb_puts(b, "&gt;"); break;
        case '"': tb_puts(b, "&quot;"); break;
        case '\'': tb_puts(b, "&#39;"); break;
        default: tb_putc(b, esc_clean_char(*p));
        }
    }
}

void esc_file_stem(char *out, size_t cap, const char *s) {
    LL_ASSERT(cap >= 2);
    size_t o = 0;
    for (; *s && o + 1 < cap; s++) {
        char ch = *s;
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
                 ch == '_' || (ch == '.' && o > 0);
        out[o++] = ok ? ch : '_';
    }
    if (o == 0) out[o++] = '_';
    out[o] = '\0';
}
