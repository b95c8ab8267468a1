"""The entry-point scripts' start-up setting; each imports this module before anything else.

Loading MLflow, SQLAlchemy, pandas and XGBoost allocates millions of objects that live until the
process exits, and the garbage collector's passes over them while they load cost 0.3-0.6 s per
process. Collection is off from here until ``cli.run_cli`` freezes what is loaded (out of the
collector's sight) and turns it back on. Only the scripts import this module, never the package.

A process that multiprocessing starts (a Dask worker of the embedded cluster) imports the
script again as ``__mp_main__`` but never reaches ``run_cli``: it keeps collection on.
"""

import gc
import sys

# multiprocessing names the re-imported script __mp_main__ while it runs. This module is the
# scripts' first import, before anything could import multiprocessing in the main process.
if "__mp_main__" not in sys.modules:
    gc.disable()
