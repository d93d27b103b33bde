# Writes a result 100,000 lists deep (a recursive JSON parser raises RecursionError) and leaves.
import os
import sys

out = sys.argv[sys.argv.index("--out") + 1]
with open(out, "w") as fh:
    fh.write('{"ok": true, "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
os._exit(0)
