"""facestack: face verification and identification on Triton and Milvus."""

from pathlib import Path

# The checkout (editable install): model_repository/, .data/, .cache/, docs/ are found from here.
REPO_ROOT = Path(__file__).resolve().parent.parent
