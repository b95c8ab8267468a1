"""The entry-point scripts' start-up setting; each imports this module before anything else.

Loading MLflow, SQLAlchemy, pandas and XGBoost allocates millions of objects that live until the
process exits, and the garbage collector's passes over them while they load cost 0.3-0.6 s per
process. Collection is off from here until ``cli.run_cli`` freezes what is loaded (out of the
collector's sight) and turns it back on. Only the scripts import this module, never the package.
"""

import gc

gc.disable()
