"""Command-line flags the WebUI host parses before loading extensions."""


def preload(parser):
    parser.add_argument("--talking-head-models-dir", type=str, default=None,
                        help="sd-talking-head: folder with SadTalker/Wav2Lip model files "
                             "(default: <webui>/models/SadTalker)")
