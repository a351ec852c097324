"""hf_mtl's seqeval metric: entity-level precision, recall and F1 (conlleval rules), overall and per entity type, and
token accuracy. An `evaluate` module, loaded from this folder: `evaluate.load(".../hf_mtl_seqeval")`."""

import datasets
import evaluate
from seqeval.metrics import accuracy_score, classification_report

_CITATION = """\
@inproceedings{ramshaw-marcus-1995-text,
    title = "Text Chunking using Transformation-Based Learning",
    author = "Ramshaw, Lance  and
      Marcus, Mitch",
    booktitle = "Third Workshop on Very Large Corpora",
    year = "1995",
    url = "https://www.aclweb.org/anthology/W95-0107",
}
@misc{seqeval,
  title={{seqeval}: A Python framework for sequence labeling evaluation},
  url={https://github.com/chakki-works/seqeval},
  note={Software available from https://github.com/chakki-works/seqeval},
  author={Hiroki Nakayama},
  year={2018},
}
"""

_DESCRIPTION = """\
Entity-level scores of a sequence tagger with seqeval's default (conlleval) rules: an entity is a B- tag, or an I-
tag that does not continue an entity of its type, with the I- tags of its type that follow; a predicted entity is
right when its type, start and end all match a gold one. The same as the Hub's `seqeval` metric in its default mode,
except that a type that is never predicted (or never gold) scores 0 without a warning, and every value is a Python
number. Token accuracy is the fraction of tags predicted exactly.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[str]]`):
        Predicted tags, one list per sentence (IOB2: `O`, `B-PER`, `I-PER`, ...).
    references (`list[list[str]]`):
        Gold tags, one list per sentence, each as long as its prediction.
    zero_division (`int` or `str`, *optional*, defaults to 0):
        The value of a precision or recall whose denominator is 0: 0, 1, or `"warn"` (0 with a warning).

Returns:
    One entry per entity type found in `predictions` or `references`, `{"precision", "recall", "f1", "number"}`
    (`number`: gold entities of the type), and `overall_precision`, `overall_recall`, `overall_f1` (micro-averaged
    over entities), `overall_accuracy` (over tags).

Examples:

    >>> seqeval = evaluate.load("hf_mtl/evaluate_modules/hf_mtl_seqeval")
    >>> references = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    >>> predictions = [["B-PER", "I-PER", "O", "O"], ["B-LOC", "O"]]
    >>> results = seqeval.compute(predictions=predictions, references=references)
    >>> results["PER"]
    {'precision': 1.0, 'recall': 1.0, 'f1': 1.0, 'number': 1}
    >>> results["overall_precision"], results["overall_recall"], results["overall_accuracy"]
    (0.5, 0.3333333333333333, 0.6666666666666666)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class HfMtlSeqeval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            homepage="https://github.com/chakki-works/seqeval",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string", id="label"), id="sequence"),
                    "references": datasets.Sequence(datasets.Value("string", id="label"), id="sequence"),
                }
            ),
            codebase_urls=["https://github.com/chakki-works/seqeval"],
            reference_urls=["https://github.com/chakki-works/seqeval"],
        )

    def _compute(self, predictions, references, zero_division=0):
        report = classification_report(
            y_true=references, y_pred=predictions, output_dict=True, zero_division=zero_division
        )
        report.pop("macro avg")
        report.pop("weighted avg")
        overall = report.pop("micro avg")
        scores = {
            type_name: {
                "precision": float(score["precision"]),
                "recall": float(score["recall"]),
                "f1": float(score["f1-score"]),
                "number": int(score["support"]),
            }
            for type_name, score in report.items()
        }
        scores["overall_precision"] = float(overall["precision"])
        scores["overall_recall"] = float(overall["recall"])
        scores["overall_f1"] = float(overall["f1-score"])
        scores["overall_accuracy"] = float(accuracy_score(y_true=references, y_pred=predictions))
        return scores
