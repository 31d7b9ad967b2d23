"""sam: Segment Anything from the command line."""

__version__ = "0.1.0"
#: The name pip installs sam under (the command is `sam`, and `segment-anything` for where AWS's
#: SAM CLI owns `sam`).
DISTRIBUTION = "segment-anything-cli"
