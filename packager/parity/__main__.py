"""python -m packager.parity: compare every seed recipe with the record it names, print one table.

Exit 0 when every comparison passes, 1 when one differs, 2 when the records' scripts are not
there (they live in ../shared beside the repository, or at --shared).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from packager.parity.compare import CHECKS, SHARED, run, table
from packager.parity.seeds import SEEDS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m packager.parity", description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=SHARED, help="the folder holding upstream/ and seeds/")
    parser.add_argument("--recipe", action="append", choices=sorted(SEEDS), help="only this recipe (repeatable)")
    parser.add_argument("--check", action="append", choices=list(CHECKS), help="only this comparison (repeatable)")
    opts = parser.parse_args(argv)
    missing = [SEEDS[n].script for n in opts.recipe or SEEDS if not (opts.shared / SEEDS[n].script).is_file()]
    if missing:
        print(f"packager.parity: the records' own scripts are not in {opts.shared} (missing {missing[0]}); "
              "they come with the shared folder beside the repository, or pass --shared PATH", file=sys.stderr)
        return 2
    rows = run(opts.recipe, opts.shared, opts.check)
    print(table(rows), end="")
    failed = [r for r in rows if not r.ok]
    print(f"\n{len(rows) - len(failed)} of {len(rows)} comparisons pass"
          + (f"; DIFFERS: {', '.join(f'{r.seed} {r.check}' for r in failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
