"""hf_mtl's accuracy metric for sentence tasks. An `evaluate` module, loaded from this folder:
`evaluate.load(".../hf_mtl_accuracy")`."""

import datasets
import evaluate
from sklearn.metrics import accuracy_score

_CITATION = """
@article{scikit-learn,
    title={Scikit-learn: Machine Learning in {P}ython},
    author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and Michel, V.
           and Thirion, B. and Grisel, O. and Blondel, M. and Prettenhofer, P.
           and Weiss, R. and Dubourg, V. and Vanderplas, J. and Passos, A. and
           Cournapeau, D. and Brucher, M. and Perrot, M. and Duchesnay, E.},
    journal={Journal of Machine Learning Research},
    volume={12},
    pages={2825--2830},
    year={2011}
}
"""

_DESCRIPTION = """\
Accuracy is the fraction of predictions equal to their reference label (scikit-learn's `accuracy_score`).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`):
        Predicted label ids.
    references (`list[int]`):
        Gold label ids.

Returns:
    `accuracy` (`float`): between 0 and 1.

Examples:

    >>> accuracy = evaluate.load("hf_mtl/evaluate_modules/hf_mtl_accuracy")
    >>> accuracy.compute(predictions=[0, 1, 1, 2], references=[0, 1, 2, 2])
    {'accuracy': 0.75}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class HfMtlAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.accuracy_score.html"],
        )

    def _compute(self, predictions, references):
        return {"accuracy": float(accuracy_score(references, predictions))}
