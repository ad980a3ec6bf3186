/* gp_check: does a generated gnuplot script (or data file) hold only what the report writes?
 * Used by tests/test_report.c (the fixture's scripts, the hostile database's) and by the fuzz
 * target tests/fuzz/fuzz_report.c, which aborts on a complaint.
 *
 * gp_check_script tokenizes the script as gnuplot reads it: '...' strings (with '' for a quote),
 * "..." strings (with backslash escapes), # comments to the end of the line, a backslash before
 * the newline joining two lines, and statements separated by newlines, ';', '{' and '}'. It
 * complains (returns 0 and says why, with the line) about anything the writers never produce:
 *   - a control character other than the newline, anywhere; a string left open at the end of a
 *     line; a comment whose line ends in a backslash (it would swallow the next line);
 *   - a backquote outside '...' (gnuplot substitutes `cmd` in "..." too), an '@' (macro) or a
 *     backslash outside strings other than a line continuation;
 *   - a statement that does not start with reset, set/unset of an option the writers use, if
 *     (cond) [statement], do for [...], plot, or an assignment to formats, full_mean, full_sd;
 *     a '!' at the start of a statement (the shell);
 *   - a word that runs or loads anything (system, load, call, eval, import, save, shell, print,
 *     cd, exit, ...) or calls a function other than exists(), outside strings;
 *   - `set output` to anything but 'STEM.' . fmt, and a plot data source that is not '', '+',
 *     'STEM.dat' or keyentry (a source starting with '<' is a shell pipe).
 * gp_check_data accepts comment lines (not ending in a backslash), blank lines, and lines of
 * numbers (nan and inf included) and 0xRRGGBB colours.
 *
 * Header-only (static functions), like tests/util.h, so both the Check suites and the fuzz build
 * can include it without a Makefile rule.
 */
#ifndef LORALAB_TESTS_GP_CHECK_H
#define LORALAB_TESTS_GP_CHECK_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum { GPC_WORD, GPC_NUM, GPC_SQ, GPC_DQ, GPC_PUNCT } GpcKind;

typedef struct {
    GpcKind kind;
    const char *s; /* the word, number or string contents (raw, escapes undone not) */
    size_t n;
    char punct;
} GpcTok;

typedef struct {
    GpcTok *t;
    int n, cap;
    int line; /* where the statement started */
} GpcStmt;

static int gpc_fail(char *why, size_t cap, int line, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int gpc_fail(char *why, size_t cap, int line, const char *fmt, ...) {
    if (why && cap) {
        int k = snprintf(why, cap, "line %d: ", line);
        va_list ap;
        va_start(ap, fmt);
        if (k >= 0 && (size_t)k < cap) vsnprintf(why + k, cap - (size_t)k, fmt, ap);
        va_end(ap);
    }
    return 0;
}

static int gpc_is(const GpcTok *t, const char *word) {
    return t->kind == GPC_WORD && strlen(word) == t->n && memcmp(t->s, word, t->n) == 0;
}

static int gpc_in(const GpcTok *t, const char *const *list) {
    for (; *list; list++)
        if (gpc_is(t, *list)) return 1;
    return 0;
}

static int gpc_stem_char(char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
           ch == '-' || ch == '.';
}

/* 'STEM' + suffix, STEM a file stem (no leading '.'). */
static int gpc_stem_then(const GpcTok *t, const char *suffix) {
    size_t ls = strlen(suffix);
    if (t->kind != GPC_SQ || t->n <= ls || t->s[0] == '.' || memcmp(t->s + t->n - ls, suffix, ls) != 0) return 0;
    for (size_t i = 0; i + ls < t->n; i++)
        if (!gpc_stem_char(t->s[i])) return 0;
    return 1;
}

static const char *const GPC_FORBIDDEN[] = {"system", "load", "call", "eval", "evaluate", "import", "save", "shell",
                                            "print", "printerr", "cd", "exit", "quit", "history", "pause", "bind",
                                            "fit", "test", "replot", "refresh", NULL};
static const char *const GPC_SET_OPTIONS[] = {
    "encoding", "linetype", "terminal", "termoption", "output", "grid", "tics",    "border",  "multiplot",
    "xlabel",   "ylabel",   "title",    "key",        "xtics",  "ytics", "logscale", "xrange", "yrange",
    "format",   "offsets",  "palette",  "cbrange",    "cblabel", "cbtics", NULL};
static const char *const GPC_UNSET_OPTIONS[] = {"output", "grid", "key", "multiplot", NULL};
static const char *const GPC_ASSIGNED[] = {"formats", "full_mean", "full_sd", NULL};
/* Words that may stand before '(' (exists() is the only function the scripts call). */
static const char *const GPC_BEFORE_PAREN[] = {"exists", "if", "xtics", "ytics", "defined", NULL};

/* Checks one statement t[0..n). */
static int gpc_statement(const GpcTok *t, int n, int line, char *why, size_t cap) {
    if (n == 0) return 1;
    for (int i = 0; i < n; i++) {
        if (t[i].kind != GPC_WORD) continue;
        if (gpc_in(&t[i], GPC_FORBIDDEN))
            return gpc_fail(why, cap, line, "the word '%.*s' outside a string", (int)t[i].n, t[i].s);
        if (i + 1 < n && t[i + 1].kind == GPC_PUNCT && t[i + 1].punct == '(' && !gpc_in(&t[i], GPC_BEFORE_PAREN))
            return gpc_fail(why, cap, line, "a call of '%.*s'", (int)t[i].n, t[i].s);
    }
    if (t[0].kind == GPC_PUNCT && t[0].punct == '!') return gpc_fail(why, cap, line, "a shell command (!)");
    if (t[0].kind != GPC_WORD) return gpc_fail(why, cap, line, "a statement that starts with no word");
    if (gpc_is(&t[0], "reset")) return n == 1 ? 1 : gpc_fail(why, cap, line, "reset with arguments");
    if (gpc_is(&t[0], "set") || gpc_is(&t[0], "unset")) {
        int set = gpc_is(&t[0], "set");
        if (n < 2 || !gpc_in(&t[1], set ? GPC_SET_OPTIONS : GPC_UNSET_OPTIONS))
            return gpc_fail(why, cap, line, "%s of an option the writers never set: '%.*s'", set ? "set" : "unset",
                            n < 2 ? 0 : (int)t[1].n, n < 2 ? "" : t[1].s);
        if (set && gpc_is(&t[1], "output")) {
            if (!(n == 5 && gpc_stem_then(&t[2], ".") && t[3].kind == GPC_PUNCT && t[3].punct == '.' &&
                  gpc_is(&t[4], "fmt")))
                return gpc_fail(why, cap, line, "set output to something other than 'STEM.' . fmt");
        }
        return 1;
    }
    if (gpc_is(&t[0], "if")) {
        if (n < 3 || t[1].kind != GPC_PUNCT || t[1].punct != '(') return gpc_fail(why, cap, line, "if without (");
        int depth = 0, i = 1;
        for (; i < n; i++) {
            if (t[i].kind != GPC_PUNCT) continue;
            if (t[i].punct == '(') depth++;
            if (t[i].punct == ')' && --depth == 0) break;
        }
        if (i == n) return gpc_fail(why, cap, line, "if (... not closed");
        return gpc_statement(t + i + 1, n - i - 1, line, why, cap);
    }
    if (gpc_is(&t[0], "do")) {
        if (n < 4 || !gpc_is(&t[1], "for") || t[2].kind != GPC_PUNCT || t[2].punct != '[' ||
            t[n - 1].kind != GPC_PUNCT || t[n - 1].punct != ']')
            return gpc_fail(why, cap, line, "do without for [...]");
        return 1;
    }
    if (gpc_is(&t[0], "plot")) {
        int depth = 0, source = 1;
        for (int i = 1; i < n; i++) {
            if (source) {
                source = 0;
                int ok = gpc_is(&t[i], "keyentry") ||
                         (t[i].kind == GPC_SQ && (t[i].n == 0 || (t[i].n == 1 && t[i].s[0] == '+'))) ||
                         gpc_stem_then(&t[i], ".dat");
                if (!ok) return gpc_fail(why, cap, line, "a plot source other than '', '+', 'STEM.dat', keyentry");
            }
            if (t[i].kind != GPC_PUNCT) continue;
            if (t[i].punct == '(' || t[i].punct == '[') depth++;
            else if (t[i].punct == ')' || t[i].punct == ']') depth--;
            else if (t[i].punct == ',' && depth == 0) source = 1;
        }
        return source ? gpc_fail(why, cap, line, "plot ends with a comma") : 1;
    }
    if (n >= 2 && t[1].kind == GPC_PUNCT && t[1].punct == '=' && gpc_in(&t[0], GPC_ASSIGNED)) return 1;
    return gpc_fail(why, cap, line, "a statement the writers never write: '%.*s'", (int)t[0].n, t[0].s);
}

static void gpc_push(GpcStmt *st, GpcTok tok) {
    if (st->n == st->cap) {
        st->cap = st->cap ? 2 * st->cap : 64;
        st->t = realloc(st->t, (size_t)st->cap * sizeof *st->t);
        if (!st->t) abort();
    }
    st->t[st->n++] = tok;
}

/* Scans a string opened by quote (' or ") from s[*i], its first content byte, to its closing
 * quote (*i ends on it): '...' ends at a ' not doubled, "..." at a " not escaped by a backslash,
 * and may not hold a backquote (gnuplot runs `cmd` in "..."). 0 and why when the line ends first. */
static int gpc_string(const char *s, size_t len, size_t *i, char quote, int line, char *why, size_t cap) {
    for (;;) {
        if (*i >= len || s[*i] == '\n') return gpc_fail(why, cap, line, "a %c...%c string left open", quote, quote);
        char ch = s[*i];
        if (quote == '"' && ch == '`') return gpc_fail(why, cap, line, "a backquote in a \"...\" string");
        if (quote == '"' && ch == '\\') {
            *i += 2;
            continue;
        }
        if (ch == quote) {
            if (quote == '\'' && *i + 1 < len && s[*i + 1] == '\'') {
                *i += 2;
                continue;
            }
            return 1;
        }
        (*i)++;
    }
}

/* 1 when the script is clean; else 0 and why. */
static int gp_check_script(const char *s, size_t len, char *why, size_t cap) {
    GpcStmt st = {NULL, 0, 0, 1};
    int line = 1, ok = 1;
    size_t i = 0;
    for (size_t j = 0; j < len; j++) {
        unsigned char ch = (unsigned char)s[j];
        if ((ch < 0x20 && ch != '\n') || ch == 0x7f) {
            int l = 1;
            for (size_t q = 0; q < j; q++) l += s[q] == '\n';
            return gpc_fail(why, cap, l, "control character 0x%02x", ch);
        }
    }
    while (ok && i <= len) {
        char c = i < len ? s[i] : '\n';
        if (i == len || c == '\n' || c == ';' || c == '{' || c == '}') {
            ok = gpc_statement(st.t, st.n, st.line, why, cap);
            st.n = 0;
            if (c == '\n') line++;
            st.line = line;
            i++;
            if (i > len) break;
            continue;
        }
        if (c == ' ') {
            i++;
        } else if (c == '\\') {
            if (i + 1 < len && s[i + 1] == '\n') {
                line++;
                i += 2;
            } else {
                ok = gpc_fail(why, cap, line, "a backslash outside a string");
            }
        } else if (c == '#') {
            size_t e = i;
            while (e < len && s[e] != '\n') e++;
            if (e > i && s[e - 1] == '\\') ok = gpc_fail(why, cap, line, "a comment that ends in a backslash");
            i = e;
        } else if (c == '\'' || c == '"') {
            size_t b = ++i;
            ok = gpc_string(s, len, &i, c, line, why, cap);
            if (ok) gpc_push(&st, (GpcTok){c == '\'' ? GPC_SQ : GPC_DQ, s + b, i - b, 0});
            i++;
        } else if (c == '`' || c == '@') {
            ok = gpc_fail(why, cap, line, "'%c' outside a string", c);
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') {
            size_t b = i;
            while (i < len && ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
                               (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
                i++;
            gpc_push(&st, (GpcTok){GPC_WORD, s + b, i - b, 0});
        } else if (c >= '0' && c <= '9') {
            size_t b = i;
            while (i < len && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.' ||
                               ((s[i] == 'e' || s[i] == 'E') && i + 1 < len &&
                                ((s[i + 1] >= '0' && s[i + 1] <= '9') || s[i + 1] == '-' || s[i + 1] == '+')) ||
                               ((s[i] == '-' || s[i] == '+') && (s[i - 1] == 'e' || s[i - 1] == 'E'))))
                i++;
            gpc_push(&st, (GpcTok){GPC_NUM, s + b, i - b, 0});
        } else {
            gpc_push(&st, (GpcTok){GPC_PUNCT, s + i, 1, c});
            i++;
        }
    }
    free(st.t);
    return ok;
}

/* 1 when every line of the data file is blank, a one-line comment, or numbers and colours. */
static int gp_check_data(const char *s, size_t len, char *why, size_t cap) {
    int line = 1;
    for (size_t i = 0; i < len; line++) {
        size_t e = i;
        while (e < len && s[e] != '\n') e++;
        for (size_t q = i; q < e; q++)
            if ((unsigned char)s[q] < 0x20 || s[q] == 0x7f)
                return gpc_fail(why, cap, line, "control character 0x%02x", (unsigned char)s[q]);
        if (e > i && s[i] == '#') {
            if (s[e - 1] == '\\') return gpc_fail(why, cap, line, "a comment that ends in a backslash");
        } else {
            for (size_t q = i; q < e;) {
                while (q < e && s[q] == ' ') q++;
                size_t b = q;
                while (q < e && s[q] != ' ') q++;
                if (q == b) break;
                /* A number (any length: %.3f of 1e300 has 300 digits), nan or inf, or 0xRRGGBB. */
                size_t n = q - b;
                const char *w = s + b;
                int digits = 0, numeric = 1;
                for (size_t k = 0; k < n && numeric; k++) {
                    digits += w[k] >= '0' && w[k] <= '9';
                    numeric = strchr("0123456789.eE+-", w[k]) != NULL;
                }
                size_t sign = w[0] == '-', m = n - sign;
                int special = (m == 3 && (strncasecmp(w + sign, "nan", 3) == 0 || strncasecmp(w + sign, "inf", 3) == 0)) ||
                              (m == 8 && strncasecmp(w + sign, "infinity", 8) == 0);
                int colour = n == 8 && w[0] == '0' && w[1] == 'x' && strspn(w + 2, "0123456789abcdef") >= 6;
                if (!(numeric && digits) && !special && !colour)
                    return gpc_fail(why, cap, line, "a data field that is no number: '%.*s'", (int)(n < 40 ? n : 40), w);
            }
        }
        i = e + 1;
    }
    return 1;
}

#endif
