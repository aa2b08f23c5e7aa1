"""The export tests use the tiny predictors of tests/predict."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "predict"))
