"""Check a built site: the API pages of both estimators and the example gallery are there.

Usage: ``python docs/check_html.py docs/_build/html``
"""

import sys
from pathlib import Path

REQUIRED = {
    "generated/sklearn_meta.MetaRegressor.html": ["partial_adapt", "reset_adaptation", "score"],
    "generated/sklearn_meta.MetaClassifier.html": ["partial_adapt", "predict_proba", "n_way"],
    "api.html": ["MetaRegressor", "MetaClassifier", "AdaptationCurveDisplay"],
    "user_guide.html": ["metadata routing"],
    "auto_examples/index.html": ["sinusoid_quickstart"],
}


def main(root: str) -> int:
    missing = []
    for page, words in REQUIRED.items():
        path = Path(root) / page
        if not path.exists():
            missing.append(f"{page}: page missing")
            continue
        text = path.read_text(encoding="utf-8")
        missing += [f"{page}: no {word!r}" for word in words if word not in text]
    for problem in missing:
        print(problem)
    print("site check:", "FAILED" if missing else "ok", f"({len(REQUIRED)} pages)")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/_build/html"))
