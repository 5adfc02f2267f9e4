#!/usr/bin/env python
"""Build a notebook from a percent-format script (the way notebooks here are authored).

    python scripts/py2nb.py src.py notebooks/NN_name.ipynb

Cells start with `# %%` (code) or `# %% [markdown]` (markdown: every line's leading '# ' is removed).
`# %% tags=["parameters"]` marks papermill's parameters cell. Outputs are empty; the kernel is `presto`.
"""
import re
import sys

import nbformat


def convert(src: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "presto", "display_name": "Python (presto)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    cells, kind, tags, buf = [], None, [], []

    def flush():
        if kind is None:
            return
        text = "\n".join(buf).strip("\n")
        if kind == "markdown":
            text = "\n".join(re.sub(r"^# ?", "", l) for l in text.splitlines())
            cells.append(nbformat.v4.new_markdown_cell(text))
        else:
            c = nbformat.v4.new_code_cell(text)
            if tags:
                c.metadata["tags"] = tags
            cells.append(c)

    for line in src.splitlines():
        m = re.match(r"^# %%(.*)$", line)
        if m:
            flush()
            head = m.group(1)
            kind = "markdown" if "[markdown]" in head else "code"
            t = re.search(r"tags=\[(.*?)\]", head)
            tags = [s.strip().strip("\"'") for s in t.group(1).split(",")] if t else []
            buf = []
        else:
            buf.append(line)
    flush()
    nb.cells = cells
    return nb


if __name__ == "__main__":
    src, dst = sys.argv[1], sys.argv[2]
    nbformat.write(convert(open(src).read()), dst)
    print(f"wrote {dst}")
