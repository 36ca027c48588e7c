"""The command-line commands of ``siglip2-dense`` (and of the ``tools/*.py`` wrappers), one module each.

Every module holds ``build_parser() -> argparse.ArgumentParser`` and ``run(args) -> int``. Building the
parser imports nothing heavy (no torch, no transformers), so ``--help`` answers at once; ``run`` imports
what it needs. :mod:`siglip2_dense.cli` maps each command name to its module.

Import rule: may import every wing (the commands train, evaluate and segment); nothing imports it but
:mod:`siglip2_dense.cli`.
"""
