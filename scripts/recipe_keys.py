#!/usr/bin/env python3
"""Writes docs/recipe_keys.md, every recipe key with its default and meaning,
from the config's own lists: the keys and their nesting from
core/config/fields.h (the list the recipe reader and printer walk), the
meanings from the comments beside each member in core/config/config.h, the
defaults from `longtrain help recipe` (the printer itself).

  scripts/recipe_keys.py build/longtrain           rewrite docs/recipe_keys.md
  scripts/recipe_keys.py --check build/longtrain   exit 1 naming what differs: a key
                                                   the binary reads that the page lacks,
                                                   or a page older than the lists
"""
import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "recipe_keys.md"


def structs(header):
    """config.h's structs: name -> ({member: (type, comment)}, the struct's own comment)."""
    found = {}
    lines = header.splitlines()
    i = 0
    while i < len(lines):
        match = re.match(r"struct (\w+) \{$", lines[i])
        if not match:
            i += 1
            continue
        intro, j = [], i - 1
        while j >= 0 and lines[j].startswith("//"):
            intro.insert(0, lines[j][2:].strip())
            j -= 1
        members, above, depth = {}, [], 0
        i += 1
        while lines[i] != "};":
            line = lines[i].strip()
            i += 1
            depth += line.count("{") - line.count("}")
            if depth > 0 or line.endswith("}"):  # a member function's body
                above = []
                continue
            if line.startswith("//"):
                above.append(line[2:].strip())
                continue
            while line and ";" not in line and "(" not in line:
                line += " " + lines[i].strip()  # a declaration wrapped over lines
                i += 1
            decl = re.match(r"([\w:<>, ]+?)\s+(\w+)(?:\s*=\s*[^;]*)?;\s*(?://\s*(.*))?$", line)
            if decl and "(" not in line.split("//")[0]:
                comment = " ".join(above + ([decl.group(3)] if decl.group(3) else []))
                members[decl.group(2)] = (decl.group(1).strip(), comment)
            above = []
        found[match.group(1)] = (members, " ".join(intro))
    return found


def spellings(header):
    """Each enum's spellings (LT_SPELLINGS in config.h): type -> ["auto", "fp32", ...]."""
    return {m.group(1): re.findall(r'"([^"]*)"', m.group(2))
            for m in re.finditer(r"LT_SPELLINGS\((\w+),(.*?)\);", header, re.S)}


def keys(fields, types):
    """fields.h's keys in order: (dotted key, struct, member), sections
    expanded, a list followed by its items' keys (KEY[].FIELD)."""
    visits = {}
    for struct, body in re.findall(r"void visit\(V& v, (\w+)& \w+\) \{\n(.*?)\n\}", fields, re.S):
        visits[struct] = re.findall(r'v\.(field|section|list)\("(\w+)", \w+\.(\w+)', body)

    def walk(struct, prefix):
        for kind, key, member in visits[struct]:
            path = prefix + key
            if kind == "field":
                yield path, struct, member
                continue
            member_type = types[struct][0][member][0]
            if kind == "list":
                yield path, struct, member
            inner = re.sub(r"std::vector<(\w+)>", r"\1", member_type)
            yield from walk(inner, path + ("[]." if kind == "list" else "."))

    return list(walk("Config", ""))


def defaults(binary):
    """Every key the binary reads -> its default, as printed (lists' items,
    KEY[].FIELD, come from the field list alone)."""
    text = subprocess.run([binary, "help", "recipe"], check=True, capture_output=True, text=True).stdout
    flat, path = {}, []  # path: (indent, key) of the maps enclosing the line
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip())
        item = line.strip()
        if item == "[]" or item.startswith("- "):  # the last key's sequence: empty, or an item of it
            flat[last] = (flat[last] or []) + ([item[2:]] if item != "[]" else [])
            continue
        key, _, value = item.partition(":")
        while path and path[-1][0] >= indent:
            path.pop()
        last = ".".join([k for _, k in path] + [key])
        value = value.strip()
        if value:
            flat[last] = [] if value == "[]" else value.strip('"')
        else:
            flat[last] = None  # a section, or a sequence whose items follow
            path.append((indent, key))
    return {k: v for k, v in flat.items() if not (v is None and any(o.startswith(k + ".") for o in flat))}


def shown(value):
    if value is None or value == "":
        return '""'
    if isinstance(value, list):
        return "[" + ", ".join(shown(v) for v in value) + "]"
    if re.fullmatch(r"-?[0-9]+(\.[0-9]+)?(e[-+]?[0-9]+)?", value):
        return repr(float(value)) if "." in value or "e" in value else value  # 0.00029999999999999997: 0.0003
    return value


def page(binary):
    header = (ROOT / "core/config/config.h").read_text()
    fields = (ROOT / "core/config/fields.h").read_text()
    types = structs(header)
    choices = spellings(header)
    listed = keys(fields, types)
    values = defaults(binary)
    missing = [k for k in values if k not in {key for key, _, _ in listed}]
    if missing:
        sys.exit(f"recipe_keys: the binary reads keys fields.h's parse did not find: {', '.join(missing)}")

    out = ["# Recipe keys", "",
           "Every key a recipe may set, with its default and meaning. Generated by",
           "`scripts/recipe_keys.py build/longtrain` from core/config/fields.h (the keys),",
           "core/config/config.h (their comments) and `longtrain help recipe` (the",
           "defaults); the test cli.docs fails when this page is out of date.",
           "How recipes work (presets, overrides, errors): [recipes.md](recipes.md).", ""]
    section, undescribed = None, []
    for key, struct, member in listed:
        top = key.split(".")[0] if "." in key else ""
        if top != section:
            section = top
            intro = types[struct][1] if top else ""
            out += ["", f"## `{top}`" if top else "## top level", ""]
            if intro:
                out += [intro, ""]
            out += ["| key | default | meaning |", "|---|---|---|"]
        default = shown(values[key]) if key in values else "(per item)"
        member_type, meaning = types[struct][0][member]
        if not meaning:
            undescribed.append(f"{key} ({struct}::{member})")
        if member_type in choices:
            meaning += " (one of: " + ", ".join(c or '""' for c in choices[member_type]) + ")"
        meaning = meaning.replace("|", "\\|").replace("<", "&lt;")  # a table cell, not HTML
        out.append(f"| `{key}` | `{default}` | {meaning} |")
    if undescribed:
        sys.exit("recipe_keys: keys without a comment beside their member in core/config/config.h: " +
                 ", ".join(undescribed))
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("binary")
    args = parser.parse_args()
    text = page(args.binary)
    if not args.check:
        PAGE.write_text(text)
        return
    if not PAGE.exists() or PAGE.read_text() != text:
        old = set(re.findall(r"^\| `([^`]+)`", PAGE.read_text() if PAGE.exists() else "", re.M))
        new = set(re.findall(r"^\| `([^`]+)`", text, re.M))
        detail = f"; keys it lacks: {', '.join(sorted(new - old))}" if new - old else ""
        detail += f"; keys no longer read: {', '.join(sorted(old - new))}" if old - new else ""
        sys.exit(f"recipe_keys: docs/recipe_keys.md is out of date{detail}; "
                 f"run scripts/recipe_keys.py build/longtrain")
    print(f"recipe_keys: docs/recipe_keys.md lists all {len(re.findall(r'^[|] `', text, re.M))} keys")


if __name__ == "__main__":
    main()
