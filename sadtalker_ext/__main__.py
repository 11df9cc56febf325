import os
import sys

os.environ.setdefault("GLOG_minloglevel", "2")  # quiet mediapipe's C++ logging
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from .cli.main import main  # noqa: E402

sys.exit(main())
