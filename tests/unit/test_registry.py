"""Run: .venv/bin/python -m pytest tests/unit/test_registry.py -q

The open registry: register_model / get_model / list_models, architectures apart from their
weights variants, recipes that follow a variant's data set, models and data sets of other
packages (entry points, a real dist-info on sys.path; --import; MODULE:FUNCTION), and the errors
each path gives. Every test that registers works on a copy of the registry.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from torch import nn

import torchship
from torchship import models
from torchship.cli import _command_index, main
from torchship.models import cifar, plugins, registry
from torchship.models.registry import TensorSpec, Weights, register_model
from torchship.training import recipes


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Registrations made by the test vanish after it; entry points are looked up afresh."""
    models.names(), recipes.datasets()  # the book's models and data sets, and installed plugins, first
    for name in ("_REGISTRY", "_ARCHITECTURES", "_BUILDERS"):
        monkeypatch.setattr(registry, name, dict(getattr(registry, name)))
    monkeypatch.setattr(recipes, "_DATASETS", dict(recipes._DATASETS))
    monkeypatch.setattr(plugins, "_loaded", {})
    yield


def _tiny(num_classes: int = 4, hidden: int = 3) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, hidden), nn.Tanh(), nn.Linear(hidden, num_classes))


_IMAGE = [TensorSpec("image", (-1, 3, 32, 32))]


# --- architectures and weights variants -----------------------------------------------------


def test_chapter_8_nets_are_one_architecture_with_two_weights_variants() -> None:
    for name in ("net", "net_width", "net_dropout", "net_batchnorm", "net_depth", "net_res", "net_res_deep"):
        arch = models.get_architecture(f"digits_{name}")
        assert arch.name == name and arch.weights == (name, f"digits_{name}")
        cifar2, digits = models.get(name), models.get(f"digits_{name}")
        assert (cifar2.dataset, cifar2.num_classes, digits.dataset, digits.num_classes) == ("cifar2", 2, "digits", 10)
        assert cifar2.constructor is digits.constructor
    assert models.get_architecture("cifar2_fc").weights == ("cifar2_fc",)  # chapter 7: CIFAR-2 only
    assert models.get("net").metrics["book"] == {"val_accuracy": 0.89, "train_accuracy": 0.93}


def test_get_model_and_list_models_as_torchvision_does() -> None:
    model = torchship.get_model("digits_net")
    assert isinstance(model, cifar.Net) and model.fc2.out_features == 10  # the variant's class count
    assert torchship.get_model("net", num_classes=5).fc2.out_features == 5  # config overrides it
    assert torchship.list_models() == models.names()
    assert torchship.list_models(module="torchship.models.luna") == ["luna_classifier", "luna_malignancy"]
    assert "resnet18" in torchship.list_models(module=models.imagenet)


def test_register_model_derives_class_count_and_defaults(scratch_registry: None) -> None:
    @torchship.register_model(
        inputs=_IMAGE,
        outputs=[TensorSpec("logits", (-1, 4))],
        weights=[
            Weights("tiny_four", labels=("a", "b", "c", "d"), dataset="digits"),
            Weights("tiny_two", labels=("x", "y"), outputs=[TensorSpec("logits", (-1, 2))], model_args={"hidden": 5}),
        ],
        max_batch_size=16,
    )
    def tiny(num_classes: int = 4, hidden: int = 3) -> nn.Module:
        """A tiny classifier."""
        return _tiny(num_classes, hidden)

    assert tiny.__name__ == "tiny"  # the builder comes back unchanged
    four, two = models.get("tiny_four"), models.get("tiny_two")
    assert four.architecture == two.architecture == "tiny" and four.description == "A tiny classifier."
    assert four.default_args == {"num_classes": 4} and two.default_args == {"num_classes": 2, "hidden": 5}
    assert two.build()[-1].out_features == 2 and two.build()[1].out_features == 5
    assert four.max_batch_size == 16 and four.labels == ("a", "b", "c", "d")


def test_module_function_names_a_registered_builder_and_explains_the_rest() -> None:
    assert models.get("torchship.models.cifar:Net").name == "net"  # the architecture's default variant
    with pytest.raises(KeyError, match=r"not a registered model builder: decorate it with @torchship\.register_model"):
        models.get("torch.nn:Linear")
    with pytest.raises(KeyError, match="has no attribute 'nothing'"):
        models.get("torchship.models.cifar:nothing")
    with pytest.raises(ImportError, match="cannot import 'no_such_module_here'"):
        models.get("no_such_module_here:f")
    with pytest.raises(KeyError, match="--import MODULE"):
        models.get("no_such_model")


@pytest.mark.parametrize(
    ("weights", "outputs", "message"),
    [
        ([Weights("w", labels=("a", "a"))], (-1, 2), "labels repeat a name"),
        ([Weights("w", labels=("a", "b"), num_classes=3)], (-1, 3), "num_classes 3 but 2 labels"),
        ([Weights("w", labels=("a", "b", "c"))], (-1, 2), "have 3 classes but no output ends in a dimension of 3"),
        ([Weights("w"), Weights("w")], (-1, 2), "declares a weights name twice"),
        ([Weights("net")], (-1, 2), "model 'net' is registered twice"),
    ],
)
def test_bad_declarations_are_refused_naming_the_problem(
    scratch_registry: None, weights: list[Weights], outputs: tuple[int, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        register_model("bad", inputs=_IMAGE, outputs=[TensorSpec("logits", outputs)], weights=weights)(_tiny)
    assert "w" not in models.names() and "bad" not in models.architectures()  # nothing half-registered


def test_recipes_follow_the_declared_data_set_not_the_name(scratch_registry: None) -> None:
    register_model(
        "tiny",
        inputs=_IMAGE,
        outputs=[TensorSpec("logits", (-1, 10))],
        weights=[
            Weights("my_tiny", labels=tuple("0123456789"), dataset="digits", recipe={"epochs": 3}),
            Weights("digits_lookalike", labels=tuple("0123456789")),  # a digits_ name, no data set: no recipe
        ],
    )(_tiny)
    by_model = {r.model: r for r in recipes.image_recipes()}
    assert "digits_lookalike" not in by_model
    mine = by_model["my_tiny"]
    assert (mine.name, mine.dataset, mine.epochs, mine.learning_rate, mine.momentum) == (
        "digits-tiny",
        "digits",
        3,
        5e-2,
        0.9,
    )
    assert (by_model["net_res_deep"].learning_rate, by_model["digits_net_res_deep"].learning_rate) == (3e-3, 1e-3)
    register_model(
        "bad_recipe",
        inputs=_IMAGE,
        outputs=[TensorSpec("logits", (-1, 10))],
        weights=[Weights("bad_recipe", dataset="digits", recipe={"epochz": 3})],
    )(_tiny)
    with pytest.raises(ValueError, match=r"unknown recipe setting\(s\) \['epochz'\]"):
        recipes.image_recipes()


def test_a_data_set_option_that_clashes_with_the_recipes_is_named(scratch_registry: None, capsys) -> None:
    recipes.register_dataset(
        recipes.Dataset(
            "clash",
            lambda entry, seed: None,
            "clashing",
            recipes.Hyperparameters(1, 1, 0.1),
            options=(recipes.DatasetOption("seed", int, 0, "a seed"),),
        )
    )
    register_model(
        "clasher", inputs=_IMAGE, outputs=[TensorSpec("logits", (-1, 4))], weights=[Weights("clasher", dataset="clash")]
    )(_tiny)
    assert main(["train", "--help"]) == 2
    assert "data set 'clash' declares an option the recipes already have: argument --seed" in capsys.readouterr().err


# --- other packages: entry points, --import -------------------------------------------------


def _dist(site: Path, package: str, entry_points: str, modules: dict[str, str]) -> None:
    """An installed distribution as pip leaves it: a dist-info with entry_points.txt, and its modules."""
    info = site / f"{package}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    for name, source in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))


PLUGIN_MODEL = """
    from torch import nn
    import torchship
    from torchship import TensorSpec, Weights

    @torchship.register_model(inputs=[TensorSpec("x", (-1, 2))], outputs=[TensorSpec("y", (-1, 3))],
                              weights=[Weights("{name}", labels=("a", "b", "c"), dataset="{name}_data")])
    def {name}(num_classes: int = 3) -> nn.Module:
        return nn.Linear(2, num_classes)
"""
PLUGIN_DATA = """
    import torch
    import torchship
    from torchship.data.images import ClassificationData, ImageSplit

    def register() -> None:
        def load(entry, points):
            x = torch.randn(points, 2, generator=torch.Generator().manual_seed(0))
            split = ImageSplit(x, (x[:, 0] > 0).long())
            return ClassificationData(split, split, ("a", "b", "c"), {{"dataset": "made up"}})
        torchship.register_dataset(torchship.Dataset("{name}_data", load, "made-up points",
            torchship.Hyperparameters(epochs=2, batch_size=8, learning_rate=0.1),
            options=(torchship.DatasetOption("points", int, 64, "how many"),)))
"""


def test_installed_packages_models_and_recipes_reach_every_command(
    scratch_registry: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"plug_{tmp_path.name.replace('-', '_')[-12:]}"
    _dist(
        tmp_path / "site",
        f"{name}_pkg",
        f"""
        [torchship.models]
        m = {name}_models
        [torchship.recipes]
        d = {name}_data:register
        """,
        {f"{name}_models": PLUGIN_MODEL.format(name=name), f"{name}_data": PLUGIN_DATA.format(name=name)},
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert name in models.names() and models.get(name).num_classes == 3
    recipe = next(r for r in recipes.image_recipes() if r.model == name)
    assert recipe.name == f"{name}_data-{name}".replace("_", "-")
    out, repo = tmp_path / "m.ckpt", tmp_path / "repo"
    assert main(["train", recipe.name, "--points", "32", "--out", str(out), "--tb-dir", "", "--no-progress"]) == 0
    assert main(["export", str(out), "--repository", str(repo), "--formats", "torchscript"]) == 0
    assert (repo / name / "1" / "model.pt").is_file()
    for module in (f"{name}_models", f"{name}_data"):
        monkeypatch.delitem(sys.modules, module)


def test_a_broken_package_is_named_every_time_not_skipped(
    scratch_registry: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"broken_{tmp_path.name.replace('-', '_')[-12:]}"
    _dist(tmp_path / "site", "brokenpkg", f"[torchship.models]\nm = {name}\n", {name: "raise RuntimeError('boom')\n"})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for _ in range(2):
        with pytest.raises(plugins.PluginError, match=rf"entry point m = {name} .*brokenpkg 0.1.*RuntimeError: boom"):
            models.get("net")
    assert main(["train", "--help"]) == 2


def test_import_option_adds_a_module_from_the_current_directory(
    scratch_registry: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"mine_{tmp_path.name.replace('-', '_')[-12:]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(PLUGIN_MODEL.format(name=name)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    repo = tmp_path / "repo"
    argv = ["--import", name, "export", f"{name}:{name}", "--repository", str(repo), "--formats", "torchscript"]
    assert main(argv) == 0
    assert (repo / name / "1" / "model.pt").is_file()
    monkeypatch.delitem(sys.modules, name)
    assert main(["--import", "no_such_module_xyz", "parity"]) == 2
    assert "cannot import 'no_such_module_xyz'" in capsys.readouterr().err


def test_the_command_is_found_after_global_options() -> None:
    assert _command_index(["--import", "serve", "-v", "serve", "--http-port", "0"]) == 3
    assert _command_index(["--import=pkg", "export", "x"]) == 1
    assert _command_index(["-v"]) == 1
