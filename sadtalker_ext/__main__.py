import os
import sys

os.environ.setdefault("GLOG_minloglevel", "2")  # quiet mediapipe's C++ logging
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from .cli import sigint  # noqa: E402

sigint.install()  # Ctrl-C never lands inside an import (see cli/sigint.py)
try:  # Ctrl-C while the modules load or the arguments are parsed: one line, no traceback
    from .cli.main import main  # noqa: E402

    code = main()
except KeyboardInterrupt:
    print("\ninterrupted; no video was written", file=sys.stderr)
    code = 130
sys.exit(code)
