"""Publishing offline: what `--push_to_hub` and `trainer.push_to_hub()` would upload, recorded at the
`huggingface_hub` calls the Trainer makes, with the hf_mtl card among the files."""

import fnmatch
from concurrent.futures import Future
from pathlib import Path

import pytest
import transformers.trainer
from huggingface_hub import ModelCard

import hf_mtl
from run_mtl import main

FAST = ["--max_steps", "4", "--logging_steps", "2", "--learning_rate", "1e-3", "--disable_tqdm", "true"]


class RecordingHubApi:
    """Stands in for `HfApi`: creates no repository and uploads nothing, but records each upload's files (with the
    README's text as it was at that moment)."""

    def __init__(self):
        self.repos: list[str] = []
        self.uploads: list[dict] = []

    def create_repo(self, repo_id, **kwargs):
        self.repos.append(repo_id)
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(self, repo_id, folder_path, commit_message=None, ignore_patterns=(), path_in_repo=None, **kw):
        folder = Path(folder_path)
        files = sorted(
            str(path.relative_to(folder))
            for path in folder.rglob("*")
            if path.is_file()
            and not any(
                fnmatch.fnmatch(part, pattern)
                for part in path.relative_to(folder).parts
                for pattern in ignore_patterns or ()
            )
        )
        readme = folder / "README.md"
        self.uploads.append(
            {
                "repo_id": repo_id,
                "message": commit_message,
                "path_in_repo": path_in_repo,
                "files": files,
                "readme": readme.read_text() if readme.is_file() else None,
            }
        )
        if kw.get("run_as_future"):
            future = Future()
            future.set_result(None)
            return future
        return None


@pytest.fixture
def hub(monkeypatch) -> RecordingHubApi:
    api = RecordingHubApi()
    monkeypatch.setattr(transformers.trainer, "hf_api", lambda: api)
    return api


def _model_index(readme: str) -> dict[tuple[str, str], str]:
    """(task name, split) -> metric type, from the card's model-index."""
    card = ModelCard(readme)
    return {(r.task_name, r.dataset_split): r.metric_type for r in card.data.eval_results}


def test_push_to_hub_uploads_model_tokenizer_curves_and_the_hf_mtl_card_once(two_corpora, tmp_path, hub):
    output_dir = tmp_path / "pushed"
    main(
        [str(two_corpora), "--output_dir", str(output_dir), *FAST]
        + ["--push_to_hub", "true", "--hub_model_id", "user/mtl-demo", "--hub_strategy", "end"]
        + ["--model_card_language", "en"]
    )
    assert hub.repos == ["user/mtl-demo"]
    assert [upload["message"] for upload in hub.uploads] == ["End of training"]  # one commit, at the end
    upload = hub.uploads[0]
    for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "README.md"):
        assert name in upload["files"], name
    assert "training_curves.png" in upload["files"] and "best_per_task.json" in upload["files"]
    assert not any(name.startswith("checkpoint-") for name in upload["files"])
    index = _model_index(upload["readme"])
    assert index == {
        ("sentiment", "validation"): "accuracy",
        ("ner", "validation"): "f1",
        ("ner", "test"): "f1",
    }
    card = ModelCard(upload["readme"])
    assert card.data.language == ["en"] and card.data.base_model is None  # a local encoder folder is no Hub id
    assert card.data.widget == [{"text": "a great film"}]  # the first validation row of the data
    assert 'pipe = pipeline("multitask", model="user/mtl-demo")' in upload["readme"]
    assert "# mtl-demo" in upload["readme"] and "Evaluation results" in upload["readme"]


def test_hub_strategy_every_save_pushes_checkpoints_then_the_card_at_the_end(two_corpora, tmp_path, hub):
    output_dir = tmp_path / "every-save"
    main(
        [str(two_corpora), "--output_dir", str(output_dir), *FAST, "--save_steps", "2", "--do_predict", "false"]
        + ["--push_to_hub", "true", "--hub_model_id", "user/mtl-demo", "--hub_strategy", "every_save"]
    )
    messages = [upload["message"] for upload in hub.uploads]
    assert messages == ["Training in progress, step 2", "Training in progress, step 4", "End of training"]
    final = hub.uploads[-1]
    assert ModelCard(final["readme"]).data.language is None  # not given, not guessed
    assert ("ner", "validation") in _model_index(final["readme"])


def test_trainer_push_to_hub_from_python_carries_the_hf_mtl_card(tiny_dir, tokenizer, tmp_path, hub):
    model = hf_mtl.MultiTaskModel.from_encoder(str(tiny_dir))
    data = hf_mtl.load_multitask_datasets([{"name": "demo", "dataset_name": "hf_mtl:demo"}], tokenizer)
    args = hf_mtl.MultiTaskTrainingArguments(
        str(tmp_path / "py"), max_steps=2, report_to="none", push_to_hub=True, hub_model_id="user/py-mtl"
    )
    trainer = hf_mtl.MultiTaskTrainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval_dataset,
        processing_class=tokenizer,
        compute_metrics=hf_mtl.build_compute_metrics(model.config.task_specs),
        preprocess_logits_for_metrics=hf_mtl.preprocess_logits_for_metrics,
    )
    trainer.train()
    trainer.evaluate()
    trainer.push_to_hub(sources=data.source_configs)
    readme = hub.uploads[-1]["readme"]
    assert "A multi-task model trained with hf_mtl" in readme
    assert _model_index(readme) == {("sentiment", "validation"): "accuracy", ("ner", "validation"): "f1"}
    assert "hf_mtl:demo" in readme
