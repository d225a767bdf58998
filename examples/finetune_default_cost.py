"""What FineTuningClassifier's defaults cost and give on 100 SST-2 sentences, against frozen + the tuned head.

One stratified draw of 100 training sentences (seed 0); the official test split (1821 sentences).
Prints one JSON line: the CPU class, the fit's wall time, both test accuracies and ``decision_``.

Run: ``python examples/finetune_default_cost.py`` (about 3 minutes on this project's 2-core AVX-512
machine: the fit on seed 0 took 151 s there and kept the frozen encoder; a fit that keeps tuning, 310 s).
"""

import json
import sys
import time
from pathlib import Path

import torch
from sklearn.metrics import accuracy_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sst2_learning_curve import DEFAULT_DATA, read_sst2, subsample  # noqa: E402

from sktransfer import FineTuningClassifier, TextEncoder  # noqa: E402
from sktransfer.heads import tuned_head  # noqa: E402


def main() -> int:
    train, y_train = read_sst2(DEFAULT_DATA / "sst2" / "stsa.binary.train")
    test, y_test = read_sst2(DEFAULT_DATA / "sst2" / "stsa.binary.test")
    texts, labels = subsample(train, y_train, 100, seed=0)
    encoder = TextEncoder().fit(texts)
    head = tuned_head(labels).fit(encoder.transform(texts), labels)
    frozen = accuracy_score(y_test, head.predict(encoder.transform(test)))
    start = time.perf_counter()
    clf = FineTuningClassifier(TextEncoder(), random_state=0, show_progress=False).fit(texts, labels)
    seconds = time.perf_counter() - start
    print(json.dumps({"cpu": torch.backends.cpu.get_cpu_capability(), "fit_seconds": round(seconds, 1),
                      "frozen_tuned_head": frozen, "finetuned": clf.score(test, y_test), "kept": clf.tuned_,
                      "decision": clf.decision_}, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
