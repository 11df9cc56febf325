"""Double of ``modules/cmd_args.py``: the WebUI's argument parser (the flags the extension reads).

Extensions' ``preload.py`` files add their own flags to ``parser`` before it is parsed.
"""
import argparse

parser = argparse.ArgumentParser()
parser.add_argument("--data-dir", type=str, default=None)
parser.add_argument("--models-dir", type=str, default=None)
parser.add_argument("--api", action="store_true")
parser.add_argument("--api-auth", type=str, default=None)
parser.add_argument("--nowebui", action="store_true")
parser.add_argument("--gradio-auth", type=str, default=None)
parser.add_argument("--gradio-auth-path", type=str, default=None)
parser.add_argument("--cors-allow-origins", type=str, default=None)
parser.add_argument("--cors-allow-origins-regex", type=str, default=None)
parser.add_argument("--hide-ui-dir-config", action="store_true")
parser.add_argument("--freeze-settings", action="store_true")
parser.add_argument("--freeze-settings-in-sections", type=str, default=None)
parser.add_argument("--freeze-specific-settings", type=str, default=None)
parser.add_argument("--lowvram", action="store_true")
parser.add_argument("--medvram", action="store_true")
parser.add_argument("--skip-install", action="store_true")
