"""trainers.hub: templates, cards that parse back, atomic saves, pushes that keep local work, and
round trips through a local Hub endpoint (olah for reads, trainers.testing.hub for writes)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from huggingface_hub import DatasetCard, ModelCard, PyTorchModelHubMixin
from torch import nn

from trainers import hub
from trainers.hub import (
    HubCardMixin,
    HubPushError,
    atomic_save,
    available_templates,
    card_template,
    make_eval_results,
    push_folder,
    render_card,
    save_policy,
)


# ------------------------------------------------------------------------------------ templates
def test_every_template_is_found_and_renders():
    names = available_templates()
    for expected in ("adapter_card", "dataset_card", "weights_dataset_card"):
        assert expected in names
    assert "README" not in names
    for name in names:
        text = card_template(name)
        assert "{{ card_data }}" in text, f"{name} has no metadata header"
        card = render_card(name, repo_id="owner/thing", license="apache-2.0")
        assert card.data.license == "apache-2.0"


def test_template_lookup_accepts_suffix_and_names_missing_ones():
    assert card_template("adapter_card.md") == card_template("adapter_card")
    with pytest.raises(FileNotFoundError, match="no card template 'nope.md'.*available templates: .*adapter_card"):
        card_template("nope")


def test_template_found_from_package_resources_without_the_checkout(monkeypatch, tmp_path):
    # Simulates a wheel install: the checkout folder is gone, only the package data remains.
    monkeypatch.setattr(hub, "_REPO_CARDS", tmp_path / "missing")
    import importlib.resources

    packaged = importlib.resources.files("trainers").joinpath("hub_cards")
    assert packaged.is_dir()
    assert hub._template_roots() and all("missing" not in str(root) for root in hub._template_roots())
    assert card_template("dataset_card").startswith("---")


# ----------------------------------------------------------------------------------------- cards
def test_model_card_metadata_parses_back_with_model_index():
    results = make_eval_results(
        {"success_rate": 0.42, "average_reward": 0.61},
        dataset_name="WebShop",
        dataset_type="webshop",
        dataset_split="eval",
    )
    card = render_card(
        "adapter_card",
        repo_id="me/boost-webshop",
        base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
        datasets=["me/webshop-trajectories"],
        license="apache-2.0",
        library_name="peft",
        trainer_class="BilevelReweightTrainer",
        method="BOOST",
        paper_title="BOOST",
        hyperparameters={"learning_rate": 1e-4, "gamma": 0.99},
        eval_results=results,
        tags=["boost"],
    )
    parsed = ModelCard(str(card))
    assert parsed.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert parsed.data.datasets == ["me/webshop-trajectories"]
    assert parsed.data.model_name == "me/boost-webshop"
    values = {r.metric_type: r.metric_value for r in parsed.data.eval_results}
    assert values == {"success_rate": 0.42, "average_reward": 0.61}
    assert all(r.dataset_split == "eval" and r.dataset_name == "WebShop" for r in parsed.data.eval_results)
    text = parsed.text
    assert "`gamma` | `0.99`" in text
    assert 'AutoPeftModelForCausalLM.from_pretrained("me/boost-webshop")' in text
    assert "https://huggingface.co/datasets/me/webshop-trajectories" in text
    assert "| WebShop | eval | success rate | 0.42 |" in text


def test_eval_results_as_dicts_and_bad_keys():
    card = render_card(
        "adapter_card",
        model_name="m",
        eval_results=[
            dict(task_type="rl", dataset_type="20q", dataset_name="20Q", metric_type="reward", metric_value=-3.5)
        ],
    )
    assert ModelCard(str(card)).data.eval_results[0].metric_value == -3.5
    with pytest.raises(ValueError, match=r"eval_results\[0\] has unknown keys \['score'\]"):
        render_card("adapter_card", eval_results=[{"score": 1.0}])


def test_local_paths_stay_out_of_metadata(tmp_path):
    card = render_card("adapter_card", base_model=str(tmp_path), datasets=["me/data", "./local"])
    parsed = ModelCard(str(card))
    assert parsed.data.base_model is None
    assert parsed.data.datasets == ["me/data"]
    assert str(tmp_path) in parsed.text  # still documented in the text


def test_dataset_card_is_a_dataset_card_with_schema_and_protocol():
    card = render_card(
        "dataset_card",
        repo_id="me/traj",
        pretty_name="Trajectories",
        license="mit",
        split_protocol="30% of categories to train, rest split val/eval 50/50, seed 0",
        sources=["WebShop human demonstrations"],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}],
    )
    assert isinstance(card, DatasetCard)
    parsed = DatasetCard(str(card))
    assert parsed.data.pretty_name == "Trajectories"
    assert parsed.data.configs[0]["data_files"][0]["split"] == "train"
    for needle in (
        "`rewards`",
        "one reward per assistant turn",
        "30% of categories",
        "WebShop human demonstrations",
        'load_dataset("me/traj"',
    ):
        assert needle in parsed.text


# ----------------------------------------------------------------------------------- atomic save
def test_atomic_save_replaces_on_success(tmp_path):
    target = tmp_path / "artifact"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_save(target) as staging:
        assert staging.parent == target.parent and staging != target
        (staging / "new.txt").write_text("new")
        assert (target / "old.txt").exists()  # untouched until the end
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]  # no temp or backup left behind


def test_atomic_save_failure_keeps_previous_version(tmp_path):
    target = tmp_path / "artifact"
    target.mkdir()
    (target / "weights.bin").write_bytes(b"v1")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_save(target) as staging:
            (staging / "weights.bin").write_bytes(b"v2-partial")
            raise RuntimeError("disk full")
    assert (target / "weights.bin").read_bytes() == b"v1"
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]


def test_atomic_save_refuses_a_file_target(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        with atomic_save(tmp_path / "f"):
            pass


# ------------------------------------------------------------------------------------------ push
def test_push_to_unreachable_hub_says_folder_is_intact(tmp_path, monkeypatch):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(b"abc")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(HubPushError) as info:
        push_folder(folder, "me/adapter")
    message = str(info.value)
    assert "is intact" in message and "push_folder(" in message and "me/adapter" in message
    assert info.value.stage == "creating the repository"
    assert (folder / "adapter_model.safetensors").read_bytes() == b"abc"


def test_push_refuses_missing_or_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        push_folder(tmp_path / "nope", "me/x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="the folder is empty"):
        push_folder(tmp_path / "empty", "me/x")


# ----------------------------------------------------------------------------------------- mixin
class _Head(HubCardMixin, nn.Module, PyTorchModelHubMixin):
    card_template_name = "adapter_card"

    def __init__(self, hidden: int = 8, base_model: str = "owner/base"):
        super().__init__()
        self.linear = nn.Linear(hidden, 1)
        self.base_model = base_model

    def card_fields(self):
        return {
            "base_model": self.base_model,
            "is_adapter": False,
            "hyperparameters": {"hidden": self.linear.in_features},
        }


def test_mixin_saves_card_and_loads_back(tmp_path):
    torch.manual_seed(0)
    head = _Head(hidden=8)
    head.save_pretrained(tmp_path / "head", model_card_kwargs={"summary": "A test head."})
    assert sorted(p.name for p in (tmp_path / "head").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    card = ModelCard.load(tmp_path / "head" / "README.md")
    assert card.data.base_model == "owner/base" and "A test head." in card.text and "`hidden` | `8`" in card.text
    loaded = _Head.from_pretrained(tmp_path / "head")
    assert torch.equal(loaded.linear.weight, head.linear.weight)


def test_mixin_failed_save_keeps_previous_folder(tmp_path, monkeypatch):
    head = _Head()
    head.save_pretrained(tmp_path / "head")
    before = (tmp_path / "head" / "model.safetensors").read_bytes()

    def broken(self, directory):
        (directory / "model.safetensors").write_bytes(b"partial")
        raise OSError("no space left on device")

    monkeypatch.setattr(_Head, "_save_pretrained", broken)
    with pytest.raises(OSError, match="no space left"):
        _Head(hidden=8).save_pretrained(tmp_path / "head")
    assert (tmp_path / "head" / "model.safetensors").read_bytes() == before


def test_save_policy_writes_adapter_and_card(tmp_path, tiny_llama, tiny_tokenizer):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        tiny_llama, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    )
    save_policy(
        model, tmp_path / "policy", tokenizer=tiny_tokenizer, repo_id="me/policy", trainer_class="TreeDPOTrainer"
    )
    names = {p.name for p in (tmp_path / "policy").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "tokenizer.json"} <= names
    card = ModelCard.load(tmp_path / "policy" / "README.md")
    assert card.data.library_name == "peft" and "trl" in card.data.tags
    assert "`lora_r` | `4`" in card.text and "TreeDPOTrainer" in card.text


# ------------------------------------------------------------------------- local Hub round trips
@pytest.fixture(scope="module")
def local_hub(tmp_path_factory):
    from trainers.testing.hub import LocalHub

    with LocalHub(tmp_path_factory.mktemp("local-hub")) as running:
        yield running


def _client(hub_, code: str, timeout: float = 240) -> dict:
    """Run ``code`` in a fresh interpreter pointed at the local hub; it prints one JSON object last."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=hub_.client_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def pushed(local_hub, tmp_path_factory, tiny_llama_path, tiny_tokenizer):
    """Push every artifact kind once; record what the loading side must see."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    work = tmp_path_factory.mktemp("pushed")
    expected = {}

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_llama_path),
        LoraConfig(
            r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM", init_lora_weights=False
        ),
    )
    ids = tiny_tokenizer("buy now blue item", return_tensors="pt").input_ids
    with torch.no_grad():
        expected["adapter_logits"] = model(ids).logits[0, -1, :8].tolist()
    expected["input_ids"] = ids[0].tolist()
    with local_hub.online():
        _push_all(model, tiny_tokenizer, work, expected)
    return expected


def _push_all(model, tiny_tokenizer, work, expected):
    from trainers.data.hub_io import push_trajectories, push_weights
    from trainers.data.schema import make_trajectory, to_dataset

    hub.push_policy(
        model,
        "me/tiny-lora",
        tokenizer=tiny_tokenizer,
        local_dir=work / "policy",
        trainer_class="OfflineRLTrainer",
        eval_results=make_eval_results(
            {"success_rate": 0.25}, dataset_name="TwentyQuestions", dataset_type="twenty_questions"
        ),
    )

    rows = [
        make_trajectory(
            [{"role": "user", "content": f"obs {i}"}, {"role": "assistant", "content": f"act {i}"}],
            [float(i)],
            id=f"t{i}",
            category="c" + str(i % 2),
            source="real" if i % 2 else "synthetic",
            metadata={"seed": i},
        )
        for i in range(6)
    ]
    push_trajectories(to_dataset(rows), "me/trajectories", {"pretty_name": "Tiny trajectories", "license": "mit"})
    expected["trajectory_ids"] = [r["id"] for r in rows]
    push_weights({"t0": 0.5, "t1": 1.5, "t2": 1.0}, "me/weights", {"trajectories_repo": "me/trajectories"})

    # Artifacts from the modeling package (HubCardMixin: card + push through push_folder).
    from trainers.modeling.reweighting_head import ReweightingHead
    from trainers.modeling.value_heads import ValueHeads

    torch.manual_seed(1)
    heads = ValueHeads(8, 50, loss_type="ilql", base_model_name="org/base-model")
    heads.push_to_hub("me/value-heads")
    expected["value_heads_sum"] = float(sum(p.double().sum() for p in heads.state_dict().values()))
    head = ReweightingHead(embedding_dim=8, depth=2, hidden_dim=16, base_model_id="org/base-model")
    torch.nn.init.normal_(next(iter(head.parameters())))
    head.push_to_hub("me/reweighting-head")
    expected["reweighting_sum"] = float(sum(p.double().sum() for p in head.state_dict().values()))


@pytest.mark.slow
def test_round_trip_of_adapter_datasets_and_weights(local_hub, pushed):
    out = _client(
        local_hub,
        f"""
        import json, torch
        from huggingface_hub import hf_hub_download, ModelCard, DatasetCard
        from peft import AutoPeftModelForCausalLM
        import datasets
        from trainers.data.hub_io import load_trajectories, load_weights
        model = AutoPeftModelForCausalLM.from_pretrained("me/tiny-lora")
        with torch.no_grad():
            logits = model(torch.tensor([{pushed["input_ids"]}])).logits[0, -1, :8].tolist()
        card = ModelCard.load("me/tiny-lora")
        plain = datasets.load_dataset("me/trajectories", split="train")
        checked = load_trajectories("me/trajectories", split="train")
        dcard = DatasetCard.load("me/trajectories")
        from trainers.modeling.value_heads import ValueHeads
        from trainers.modeling.reweighting_head import ReweightingHead
        heads = ValueHeads.from_pretrained("me/value-heads")
        head = ReweightingHead.from_pretrained("me/reweighting-head", expected_base_model="org/base-model")
        print(json.dumps(dict(
            value_heads=[heads.loss_type, float(sum(p.double().sum() for p in heads.state_dict().values()))],
            value_heads_card=ModelCard.load("me/value-heads").data.base_model,
            reweighting_sum=float(sum(p.double().sum() for p in head.state_dict().values())),
            logits=logits,
            metric=card.data.eval_results[0].metric_value,
            tokenizer=bool(hf_hub_download("me/tiny-lora", "tokenizer.json")),
            plain_ids=list(plain["id"]), checked_ids=list(checked["id"]), features=str(plain.features["messages"]),
            dataset_license=dcard.data.license,
            weights=load_weights("me/weights"),
        )))
        """,
    )
    assert out["logits"] == pytest.approx(pushed["adapter_logits"], abs=1e-5)
    assert out["metric"] == 0.25 and out["tokenizer"]
    assert out["plain_ids"] == out["checked_ids"] == pushed["trajectory_ids"]
    assert "role" in out["features"] and out["dataset_license"] == "mit"
    assert out["weights"] == {"t0": 0.5, "t1": 1.5, "t2": 1.0}
    assert out["value_heads"] == ["ilql", pytest.approx(pushed["value_heads_sum"], abs=1e-9)]
    assert out["value_heads_card"] == "org/base-model"
    assert out["reweighting_sum"] == pytest.approx(pushed["reweighting_sum"], abs=1e-9)


@pytest.mark.slow
def test_trajectory_forest_push_and_load(local_hub):
    # TrajectoryForest.push_to_hub goes through Dataset.push_to_hub, which reads HF_ENDPOINT at
    # import time, so both the push and the load run in a process started with the hub's env.
    out = _client(
        local_hub,
        f"""
        import json, sys
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from test_tree import FakeEmbedder, trajectory
        from trainers.tree import build_forest
        from trainers.tree.tree import TrajectoryForest
        from huggingface_hub import DatasetCard
        rows = [
            trajectory("t", [("task: heat water", "", "look around"), ("kitchen", "", "go to kitchen")], 1.0, id="A"),
            trajectory("t", [("task: heat water", "", "look around"), ("kitchen", "", "open door")], 0.0, id="B"),
        ]
        forest = build_forest(rows, embedder=FakeEmbedder(), similarity_on="observation", show_progress=False)
        forest.push_to_hub("me/forest")
        back = TrajectoryForest.from_hub("me/forest")
        card = DatasetCard.load("me/forest").text[:2000]
        print(json.dumps(dict(before=forest.summary(), after=back.summary(), card=card)))
        """,
    )
    assert out["after"] == out["before"] and out["before"]


@pytest.mark.slow
def test_failed_push_keeps_folder_and_retry_succeeds(local_hub, tmp_path):
    folder = tmp_path / "artifact"
    folder.mkdir()
    (folder / "config.json").write_text('{"version": 2}')
    local_hub.fail_next_commit = "connection dropped mid-upload"
    before = len(local_hub.commits)
    with pytest.raises(HubPushError) as info, local_hub.online():
        push_folder(folder, "me/flaky")
    assert info.value.stage == "uploading the files"
    assert "connection dropped mid-upload" in str(info.value) and "is intact" in str(info.value)
    assert (folder / "config.json").read_text() == '{"version": 2}'
    assert len(local_hub.commits) == before  # nothing half-committed
    with local_hub.online():
        url = push_folder(folder, "me/flaky")  # the retry the message suggests
    assert "/me/flaky/commit/" in url
    assert local_hub.commits[-1]["files"] == ["config.json"]
    assert (local_hub.repo_path("me/flaky") / "config.json").read_text() == '{"version": 2}'


@pytest.mark.slow
def test_local_hub_rejects_bad_card_metadata(local_hub, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "README.md").write_text("---\nlicense: [unclosed\n---\ntext\n")
    with pytest.raises(HubPushError, match="Invalid metadata in README.md"), local_hub.online():
        push_folder(folder, "me/bad-card")
