#!/usr/bin/env python3
"""Generate cacheflow's Redis and Valkey parameter catalogs from the engines' own source.

Each engine version's src/config.c holds the table every parameter is declared in
(`standardConfig static_configs[]`, `configs[]` in 6.2): `createBoolConfig(name, alias,
flags, ...)`, `createIntConfig(name, alias, flags, lower, upper, addr, default, kind, ...)`,
`createEnumConfig(name, alias, flags, enum, addr, default, ...)` and so on. From it this
script takes, for every parameter that `CONFIG GET` shows (HIDDEN_CONFIG ones are left out):

  * the type: bool, enum (its words, one per value: a word that is an alias of an earlier
    one is dropped, since the engine reports the first), list (MULTI_ARG enums), int,
    size (MEMORY_CONFIG, percent with PERCENT_CONFIG), string (strings and special configs);
  * the range (lower/upper, for ints and sizes);
  * `runtime`: false for IMMUTABLE_CONFIG; `protected` for PROTECTED_CONFIG; `secret` for
    SENSITIVE_CONFIG;
  * the default, as written in the source: a literal, or a macro `#define`d as one in
    src/server.h or src/config.c (`CONFIG_DEFAULT_PROC_TITLE_TEMPLATE`, `CONFIG_DEFAULT_HZ`);
    NULL is the empty string; none when it is computed (then the curated note's, if any);
  * aliases (`slaveof` for `replicaof`) as parameters of their own.

What config.c cannot say comes from the curated notes (schemas/engines/notes/redis.json,
kept by hand): descriptions, `secret` marks, defaults the table does not spell out, and
refinements of the type that the engine checks in code rather than in the table
(durations and their unit, formats of special configs, list parameters). A note's type is used only when it fits the kind the table
declares (an int may be refined into a duration, never into a string).

Redis 6.2 still parsed a few parameters outside the table (`save`, `bind`, `dir`, ...):
those named in its `config_set_special_field(...)` calls are added as run-time parameters,
those only read from the file (`replicaof`, `logfile`, `unixsocketperm`) as start-only,
with their types from the notes.

Usage (Python 3 standard library only):

  scripts/gen-catalogs.py --engine redis --version 7.0 --git-dir MIRROR.git --tag 7.0.15 \
      --repository github.com/redis/redis > schemas/engines/redis-7.0.json
  scripts/gen-catalogs.py --engine valkey --version 8.0 --source-dir ~/src/valkey \
      --repository github.com/valkey-io/valkey > schemas/engines/valkey-8.0.json

  scripts/gen-catalogs.py --all --redis-git-dir R.git --valkey-git-dir V.git
      regenerates every committed catalog at the tags listed in ALL below.

With --git-dir src/config.c and src/server.h are read with `git show TAG:...` and the commit
recorded is `git rev-parse TAG^{commit}`; with --source-dir they are read from the checkout
and the commit is its `git rev-parse HEAD` (or "unknown" outside a git work tree).
"""

import argparse
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTES = os.path.join(ROOT, "schemas", "engines", "notes", "redis.json")

# (engine, catalog version, upstream tag). Redis 8.0: the newest mirror available when this
# was last run (redis/redis as of 2024-10-18, commit 6a39909) holds no 8.0.x release tag,
# only the first milestone 8.0-m01; regenerate at a release tag (8.0.0 or later) once a
# mirror has one.
ALL = [
    ("redis", "6.2", "6.2.16"),
    ("redis", "7.0", "7.0.15"),
    ("redis", "7.2", "7.2.6"),
    ("redis", "7.4", "7.4.1"),
    ("redis", "8.0", "8.0-m01"),
    ("valkey", "7.2", "7.2.7"),
    ("valkey", "8.0", "8.0.1"),
]

REPOSITORIES = {"redis": "github.com/redis/redis", "valkey": "github.com/valkey-io/valkey"}

# C limits on a 64-bit Linux build.
CONSTANTS = {
    "INT_MAX": 2**31 - 1,
    "INT_MIN": -(2**31),
    "UINT_MAX": 2**32 - 1,
    "LONG_MAX": 2**63 - 1,
    "LONG_MIN": -(2**63),
    "ULONG_MAX": 2**64 - 1,
    "LLONG_MAX": 2**63 - 1,
    "LLONG_MIN": -(2**63),
    "ULLONG_MAX": 2**64 - 1,
    "SIZE_MAX": 2**64 - 1,
    "SSIZE_MAX": 2**63 - 1,
    "LONG_LONG_MAX": 2**63 - 1,
}
I64_MAX = 2**63 - 1
I64_MIN = -(2**63)

# Parameters 6.2 parsed outside its table and still documents (the rest of those
# `strcasecmp(argv[0], ...)` branches are directives, not parameters).
LEGACY_62 = {"bind", "save", "dir", "client-output-buffer-limit", "oom-score-adj-values",
             "notify-keyspace-events", "replicaof", "slaveof", "logfile", "unixsocketperm"}

NUMERIC = {"createIntConfig", "createUIntConfig", "createLongConfig", "createULongConfig",
           "createLongLongConfig", "createULongLongConfig", "createSizeTConfig",
           "createSSizeTConfig", "createTimeTConfig", "createOffTConfig"}


def strip_comments(src):
    """C source without comments and preprocessor lines; string literals kept intact."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append(src[i:j + 1])
            i = j + 1
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            i = n if j < 0 else j + 2
            out.append(" ")
        elif src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        else:
            out.append(c)
            i += 1
    lines = [l for l in "".join(out).split("\n") if not l.lstrip().startswith("#")]
    return "\n".join(lines)


def split_args(text):
    """Split at top-level commas (outside parentheses, braces and strings)."""
    args, depth, cur, i = [], 0, [], 0
    while i < len(text):
        c = text[i]
        if c == '"':
            j = i + 1
            while text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            cur.append(text[i:j + 1])
            i = j + 1
            continue
        if c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        if c == "," and depth == 0:
            args.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    if "".join(cur).strip():
        args.append("".join(cur).strip())
    return args


def table(src):
    m = re.search(r"standardConfig\s+(?:static_)?configs\[\]\s*=\s*\{", src)
    if not m:
        sys.exit("no standardConfig table found in config.c")
    i, depth = m.end(), 1
    start = i
    while depth:
        if src[i] == '"':
            i += 1
            while src[i] != '"':
                i += 2 if src[i] == "\\" else 1
        elif src[i] == "{":
            depth += 1
        elif src[i] == "}":
            depth -= 1
        i += 1
    entries = []
    for item in split_args(src[start:i - 1]):
        call = re.match(r"(create\w+Config)\s*\((.*)\)\s*$", item, re.S)
        if call:
            entries.append((call.group(1), split_args(call.group(2))))
    return entries


def enums(src):
    """configEnum tables: name -> [(word, value expression)]."""
    out = {}
    for m in re.finditer(r"configEnum\s+(\w+)\[\]\s*=\s*\{(.*?)\{\s*NULL\s*,\s*0\s*\}\s*\}\s*;", src, re.S):
        words = re.findall(r'\{\s*"([^"]+)"\s*,\s*([^}]+?)\s*\}', m.group(2))
        out[m.group(1)] = words
    return out


def number(expr):
    """The value of a constant expression of the table, or None."""
    e = expr.strip()
    for name, value in CONSTANTS.items():
        e = re.sub(r"\b%s\b" % name, str(value), e)
    e = re.sub(r"\b(\d+)[uUlL]+\b", r"\1", e)
    if re.fullmatch(r"0[0-7]+", e):
        return int(e, 8)
    if not re.fullmatch(r"[\d\s()+\-*<>]+", e):
        return None
    try:
        return int(eval(e, {"__builtins__": {}}))  # digits and operators only
    except Exception:
        return None


def flagset(expr):
    return set(re.findall(r"[A-Z_]+_CONFIG", expr))


def c_string(expr):
    m = re.fullmatch(r'"((?:[^"\\]|\\.)*)"', expr.strip())
    return m.group(1) if m else None


def defines(*sources):
    """NAME -> replacement text of the object-like `#define`s of the sources."""
    out = {}
    for src in sources:
        for m in re.finditer(r"^[ \t]*#[ \t]*define[ \t]+([A-Za-z_]\w*)[ \t]+(.+?)[ \t]*(?:/\*.*)?$",
                             src, re.M):
            if not m.group(2).endswith("\\"):
                out.setdefault(m.group(1), m.group(2).strip())
    return out


def expand(expr, macros):
    """`expr` with the macros it names replaced by their text (a few levels deep)."""
    e = expr.strip()
    for _ in range(5):
        new = re.sub(r"\b[A-Za-z_]\w*\b",
                     lambda m: "(%s)" % macros[m.group(0)] if m.group(0) in macros
                     and m.group(0) not in CONSTANTS else m.group(0), e)
        if new == e:
            break
        e = new
    return e


def default_string(expr, macros):
    """A string default: a literal, or a macro defined as one; None for NULL."""
    e = expr.strip()
    if e in macros:
        e = macros[e].strip()
    while e.startswith("(") and e.endswith(")"):
        e = e[1:-1].strip()
    return c_string(e)


def from_source(src, legacy, macros):
    """name -> (kind, fields, alias) straight from config.c, its macros expanded."""
    enum_words = enums(src)
    params = {}
    for fn, a in table(src):
        name, alias = c_string(a[0]), c_string(a[1])
        if name is None:
            continue
        flags = flagset(a[2])
        if "HIDDEN_CONFIG" in flags or "MODULE_CONFIG" in flags:
            continue
        p = {"runtime": "IMMUTABLE_CONFIG" not in flags}
        if "PROTECTED_CONFIG" in flags:
            p["protected"] = True
        if "SENSITIVE_CONFIG" in flags:
            p["secret"] = True
        if fn == "createBoolConfig":
            kind = "bool"
            d = a[4].strip()
            if d in ("0", "1"):
                p["default"] = "yes" if d == "1" else "no"
        elif fn in ("createStringConfig", "createSDSConfig"):
            kind = "string"
            d = default_string(a[5], macros)
            if d is not None:
                p["default"] = d
            elif a[5].strip() == "NULL":
                # NULL is the empty string; a default computed at start has none.
                p["default"] = ""
        elif fn == "createEnumConfig":
            words, seen = [], set()
            for word, value in enum_words.get(a[3].strip(), []):
                if value not in seen:
                    seen.add(value)
                    words.append(word)
            multi = "MULTI_ARG_CONFIG" in flags
            kind = "list" if multi else "enum"
            p["values"] = words
            default = a[5].strip()
            for word, value in enum_words.get(a[3].strip(), []):
                if value == default:
                    p["default"] = word
                    break
        elif fn in NUMERIC:
            lower, upper = number(a[3]), number(a[4])
            kinds = flagset(a[7]) | set(re.findall(r"\b(MEMORY|PERCENT|OCTAL|INTEGER)_CONFIG", a[7]))
            if "OCTAL_CONFIG" in kinds:
                kind = "octal"
            elif "MEMORY_CONFIG" in kinds:
                kind = "size"
                if "PERCENT_CONFIG" in kinds:
                    p["percent"] = True
                    lower = max(lower or 0, 0)
            else:
                kind = "int"
            if lower is not None:
                p["min"] = lower
            if upper is not None:
                p["max"] = upper
            d = number(expand(a[6], macros))
            if d is not None:
                p["default"] = str(d) if kind != "octal" else format(d, "o")
        elif fn == "createSpecialConfig":
            kind = "special"
        else:
            continue
        params[name] = (kind, p, alias)
    for name in legacy:
        if name not in params and name != "slaveof":
            runtime = name in re.findall(r'config_set_special_field(?:_with_alias)?\("([a-z0-9-]+)"', src)
            params[name] = ("special", {"runtime": runtime}, "slaveof" if name == "replicaof" else None)
    return params


# Which types a note may give a parameter of each kind of the table.
REFINES = {
    "bool": {"bool"},
    "enum": {"enum"},
    "list": {"list"},
    "int": {"int", "duration"},
    "size": {"size"},
    "octal": {"string"},
    "string": {"string", "list"},
    "special": {"string", "list", "enum", "int", "duration", "size", "bool"},
}

FIELD_ORDER = ["type", "values", "ordered", "unit", "min", "max", "percent", "pattern",
               "true_word", "false_word", "runtime", "protected", "secret", "default",
               "description"]


def merge(name, kind, p, note):
    out = {}
    note_type = note.get("type")
    if note_type and note_type in REFINES[kind]:
        ty = note_type
    else:
        ty = {"octal": "string", "special": "string"}.get(kind, kind)
    out["type"] = ty
    if ty == "duration":
        out["unit"] = note["unit"]
    if ty in ("int", "duration", "size"):
        lo, hi = p.get("min", note.get("min")), p.get("max", note.get("max"))
        # A note may narrow the table's range to what the engine keeps: `hz` is accepted
        # up to INT_MAX but clamped to 1..500, so a larger value would never read back.
        if note.get("min") is not None and lo is not None:
            lo = max(lo, note["min"])
        if note.get("max") is not None and hi is not None:
            hi = min(hi, note["max"])
        if ty == "size":
            lo = max(lo, 0) if lo is not None else None
            hi = hi if hi is not None and hi < I64_MAX else None
        else:
            lo = lo if lo is not None and lo >= I64_MIN else None
            hi = hi if hi is not None and hi <= I64_MAX else None
        if lo is not None:
            out["min"] = lo
        if hi is not None:
            out["max"] = hi
        if ty == "size" and (p.get("percent") or note.get("percent")):
            out["percent"] = True
    if ty == "enum":
        out["values"] = p.get("values") or note["values"]
    if ty == "list":
        values = p.get("values") or note.get("values")
        if values:
            out["values"] = values
        out["ordered"] = note.get("ordered", False)
    if ty == "string" and note.get("pattern"):
        out["pattern"] = note["pattern"]
    if ty == "string" and kind == "octal" and "pattern" not in out:
        out["pattern"] = "^[0-7]{1,4}$"
    if ty == "bool":
        for k in ("true_word", "false_word"):
            if k in note:
                out[k] = note[k]
    out["runtime"] = p["runtime"]
    if p.get("protected") or note.get("protected"):
        out["protected"] = True
    if p.get("secret") or note.get("secret"):
        out["secret"] = True
    # The table's literal default, else the note's: special configs and defaults behind
    # a macro (`hz` is CONFIG_DEFAULT_HZ) have none the table can show.
    if "default" in p and not out.get("secret"):
        out["default"] = p["default"]
    elif "default" in note and not out.get("secret"):
        out["default"] = note["default"]
    if note.get("description"):
        out["description"] = note["description"]
    return {k: out[k] for k in FIELD_ORDER if k in out}


def generate(engine, version, src, tag, commit, repository, header=""):
    with open(NOTES) as f:
        notes = json.load(f)["parameters"]
    legacy = LEGACY_62 if re.search(r"standardConfig\s+configs\[\]\s*=", src) else set()
    params = {}
    macros = defines(header, src)
    for name, (kind, p, alias) in from_source(strip_comments(src), legacy, macros).items():
        # A parameter renamed upstream keeps its note under either name
        # (`aof_rewrite_cpulist` became `aof-rewrite-cpulist` in 7.4).
        entry = merge(name, kind, p, notes.get(name) or notes.get(alias or "", {}))
        params[name] = entry
        if alias:
            a = dict(entry)
            desc = entry.get("description", "")
            a["description"] = ("Legacy alias of `%s`. %s" % (name, desc)).strip()
            params[alias] = {k: a[k] for k in FIELD_ORDER if k in a}
    return {
        "$schema": "./catalog.schema.json",
        "engine": engine,
        "version": version,
        "source": {
            "repository": repository,
            "tag": tag,
            "commit": commit,
            "file": "src/config.c",
            "generator": "scripts/gen-catalogs.py",
        },
        "parameters": dict(sorted(params.items())),
    }


def render(doc):
    """One parameter a line, like the hand-written catalogs, so diffs stay readable."""
    head = {k: v for k, v in doc.items() if k != "parameters"}
    lines = ["{"]
    for k, v in head.items():
        lines.append("  %s: %s," % (json.dumps(k), json.dumps(v)))
    lines.append('  "parameters": {')
    items = list(doc["parameters"].items())
    for i, (name, spec) in enumerate(items):
        comma = "," if i + 1 < len(items) else ""
        lines.append("    %s: %s%s" % (json.dumps(name), json.dumps(spec), comma))
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def git(git_dir, *args):
    return subprocess.run(["git", "--git-dir", git_dir, *args], check=True,
                          capture_output=True, text=True).stdout


def read(args_git_dir, source_dir, tag):
    """src/config.c, src/server.h (where its default macros are defined) and the commit."""
    if args_git_dir:
        src = git(args_git_dir, "show", "%s:src/config.c" % tag)
        header = git(args_git_dir, "show", "%s:src/server.h" % tag)
        commit = git(args_git_dir, "rev-parse", "%s^{commit}" % tag).strip()
        return src, header, commit
    with open(os.path.join(source_dir, "src", "config.c")) as f:
        src = f.read()
    with open(os.path.join(source_dir, "src", "server.h")) as f:
        header = f.read()
    try:
        commit = subprocess.run(["git", "-C", source_dir, "rev-parse", "HEAD"], check=True,
                                capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return src, header, commit


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", choices=["redis", "valkey"])
    ap.add_argument("--version", help="the catalog's major.minor, e.g. 7.2")
    ap.add_argument("--git-dir", help="a git directory (a mirror) to read --tag from")
    ap.add_argument("--tag", help="the upstream release tag to read")
    ap.add_argument("--source-dir", help="a source checkout to read src/config.c from")
    ap.add_argument("--repository", help="the upstream repository, recorded in the output")
    ap.add_argument("--all", action="store_true", help="regenerate every committed catalog")
    ap.add_argument("--redis-git-dir")
    ap.add_argument("--valkey-git-dir")
    args = ap.parse_args()
    if args.all:
        dirs = {"redis": args.redis_git_dir, "valkey": args.valkey_git_dir}
        for engine, version, tag in ALL:
            if not dirs[engine]:
                sys.exit("--all needs --%s-git-dir" % engine)
            src, header, commit = read(dirs[engine], None, tag)
            doc = generate(engine, version, src, tag, commit, REPOSITORIES[engine], header)
            path = os.path.join(ROOT, "schemas", "engines", "%s-%s.json" % (engine, version))
            with open(path, "w") as f:
                f.write(render(doc))
            print("%s: %d parameters from %s %s" % (os.path.relpath(path, ROOT),
                                                    len(doc["parameters"]), tag, commit[:12]))
        return
    if not (args.engine and args.version and (args.git_dir or args.source_dir)):
        ap.error("give --engine, --version and --git-dir with --tag or --source-dir (or --all)")
    if args.git_dir and not args.tag:
        ap.error("--git-dir needs --tag")
    src, header, commit = read(args.git_dir, args.source_dir, args.tag)
    doc = generate(args.engine, args.version, src, args.tag or "", commit,
                   args.repository or REPOSITORIES[args.engine], header)
    sys.stdout.write(render(doc))


if __name__ == "__main__":
    main()
