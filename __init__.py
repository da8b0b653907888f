"""Not the package: a shim so that `import mixdistill` works from the folder above a clone (the README's layout,
with `shared/data` next to the clone).

Run from there, Python finds this clone folder, named `mixdistill`, before the installed package and imports it as an
empty namespace package: `from mixdistill.cards import make_plots` then fails on the `cards/` templates folder. With
this file the clone folder is a regular package whose contents are the real one, `mixdistill/mixdistill/`.
"""

import os as _os

__file__ = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "mixdistill", "__init__.py")
__path__ = [_os.path.dirname(__file__)]
with open(__file__, encoding="utf-8") as _f:
    exec(compile(_f.read(), __file__, "exec"))  # noqa: S102  (the package's own __init__)
del _f, _os
