"""Saliency methods (runner/saliency.py) against hand computations on tiny nets whose answer is
known in closed form (PROTOCOLS "Saliency"): every expected map here is computed in numpy from
the nets' weights, never by calling the module under test."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from runner import saliency

H = W = 6


def hand_normalize(raw: np.ndarray) -> np.ndarray:
    """PROTOCOLS post-processing at the input's size: ReLU, (L − min)/(max − min + 1e-7)."""
    raw = np.maximum(raw, 0)
    low = raw.min(axis=(-2, -1), keepdims=True)
    high = raw.max(axis=(-2, -1), keepdims=True)
    return (raw - low) / (high - low + 1e-7)


class PoolNet(nn.Module):
    """1×1 conv (K channels from one) → [square] → global average pool → linear: A_k = a_k·x + b_k,
    S_c = Σ_k V_ck·mean_ij f(A_kij) + d_c with f the identity or the square."""

    def __init__(self, a: np.ndarray, b: np.ndarray, v: np.ndarray, square: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(1, len(a), 1)
        self.fc = nn.Linear(len(a), v.shape[0])
        self.square = square
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor(a, dtype=torch.float32).reshape(-1, 1, 1, 1))
            self.conv.bias.copy_(  # type: ignore[union-attr]
                torch.tensor(b, dtype=torch.float32)
            )
            self.fc.weight.copy_(torch.tensor(v, dtype=torch.float32))
            self.fc.bias.copy_(torch.tensor([0.3, -0.2, 0.1][: v.shape[0]], dtype=torch.float32))
        self.requires_grad_(False)  # frozen weights, as in the sandbox: gradients must still reach A
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x)
        return self.fc((a * a if self.square else a).mean(dim=(2, 3)))


A_W = np.array([1.0, -2.0, 0.5])
B_W = np.array([0.1, 0.4, -0.3])
V_W = np.array([[0.7, -1.1, 2.0], [-0.4, 0.9, 0.3]])


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(7).random((2, 1, H, W)).astype(np.float32)


def activations(x: np.ndarray) -> np.ndarray:
    """A [N, K, H, W] of the 1×1 conv, by hand."""
    return A_W[None, :, None, None] * x.astype(np.float64) + B_W[None, :, None, None]


def test_gradcam_weights_are_the_linear_weights_over_the_area(images):
    net = PoolNet(A_W, B_W, V_W)
    out = saliency.gradcam(net, torch.from_numpy(images), layer="conv", target=[0, 1])
    a = activations(images)
    expected = np.stack(
        [hand_normalize(np.einsum("k,khw->hw", V_W[c] / (H * W), a[n])) for n, c in enumerate([0, 1])]
    )
    np.testing.assert_allclose(out.maps, expected, atol=1e-5)
    assert out.maps.shape == (2, H, W) and out.maps.dtype == np.float32
    assert out.layer == "conv" and out.target.tolist() == [0, 1]


def gradcampp_by_hand(d1: np.ndarray, d2: np.ndarray, d3: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Grad-CAM++ eq. 19 for one image: d* [K, H, W], a [K, H, W] → normalized map."""
    total = a.sum(axis=(1, 2), keepdims=True)
    alpha = np.where(d2 != 0, d2 / (2 * d2 + total * d3 + 1e-6), 0.0)
    weights = (alpha * np.maximum(d1, 0)).sum(axis=(1, 2))
    return hand_normalize(np.einsum("k,khw->hw", weights, a))


def test_gradcampp_alpha_in_closed_form_on_a_relu_free_net(images):
    net = PoolNet(A_W, B_W, V_W)
    out = saliency.gradcampp(net, torch.from_numpy(images), layer="conv")
    logits = activations(images).mean(axis=(2, 3)) @ V_W.T + np.array([0.3, -0.2])
    a = activations(images)
    expected = []
    for n, c in enumerate(logits.argmax(axis=1)):  # default class: the top-1
        g = np.broadcast_to((V_W[c] / (H * W))[:, None, None], a[n].shape)
        expected.append(gradcampp_by_hand(g, g**2, g**3, a[n]))
    np.testing.assert_allclose(out.maps, np.stack(expected), atol=1e-5)
    assert out.target.tolist() == logits.argmax(axis=1).tolist()
    # Channel 1 has a negative weight for class 0: Grad-CAM++ drops it (ReLU(g) = 0), Grad-CAM
    # subtracts it, so the two maps differ on this net.
    assert not np.allclose(
        out.maps, saliency.gradcam(net, torch.from_numpy(images), layer="conv").maps, atol=1e-3
    )


def test_smooth_gradcampp_averages_the_gradient_powers_over_noisy_copies(images):
    net = PoolNet(A_W, B_W, V_W, square=True)  # g = 2·V_ck·A_k/(HW): depends on the noise
    copies, sigma, seed = 5, 0.15, 3
    out = saliency.smooth_gradcampp(
        net,
        torch.from_numpy(images),
        layer="conv",
        target=[1, 0],
        copies=copies,
        sigma=sigma,
        seed=seed,
        max_batch=4,
    )
    # one noise draw per copy, the same for every image: a map does not depend on its batch
    eps = torch.randn((copies, 1, *images.shape[1:]), generator=torch.Generator().manual_seed(seed)).numpy()
    clean = activations(images)
    expected = []
    for n, c in enumerate([1, 0]):
        gs = np.stack([2 * V_W[c][:, None, None] * activations(images + sigma * e)[n] / (H * W) for e in eps])
        expected.append(gradcampp_by_hand(gs.mean(0), (gs**2).mean(0), (gs**3).mean(0), clean[n]))
    np.testing.assert_allclose(out.maps, np.stack(expected), atol=1e-5)
    assert out.params == {"copies": 5, "sigma": 0.15, "seed": 3}


def test_an_images_smooth_maps_do_not_depend_on_the_batch_it_came_in(images):
    net = PoolNet(A_W, B_W, V_W, square=True)
    x = torch.from_numpy(images)
    for method in ("smooth-gradcam++", "smoothgrad"):
        together = saliency.explain(method, net, x, target=[1, 0], copies=6, max_batch=4, **_layer(method))
        alone = saliency.explain(method, net, x[1:], target=[0], copies=6, **_layer(method))
        padded = saliency.explain(
            method, net, torch.cat([x[1:]] * 3), target=[0] * 3, copies=6, **_layer(method)
        )
        np.testing.assert_allclose(together.maps[1], alone.maps[0], atol=1e-5)
        np.testing.assert_allclose(padded.maps[0], alone.maps[0], atol=1e-5)


def _layer(method: str) -> dict:
    return {"layer": "conv"} if method in saliency.LAYER_METHODS else {}


def test_smooth_gradcampp_equals_gradcampp_where_the_gradient_ignores_the_input(images):
    net = PoolNet(A_W, B_W, V_W)
    x = torch.from_numpy(images)
    smooth = saliency.smooth_gradcampp(net, x, layer="conv", copies=4)
    np.testing.assert_allclose(smooth.maps, saliency.gradcampp(net, x, layer="conv").maps, atol=1e-5)


@pytest.mark.parametrize("selective", [True, False])
def test_normgrad_is_the_norm_of_the_virtual_identity_convs_weight_gradient(images, selective):
    net = PoolNet(A_W, B_W, V_W)
    out = saliency.normgrad(net, torch.from_numpy(images), layer="conv", target=[0, 0], selective=selective)
    a = activations(images)
    g = (V_W[0] / (H * W))[None, :, None, None]
    if selective:
        raw = np.sqrt((np.maximum(a * g, 0) ** 2).sum(axis=1))
    else:
        raw = np.sqrt((a**2).sum(axis=1)) * np.sqrt((g**2).sum(axis=1))
    np.testing.assert_allclose(out.maps, hand_normalize(raw), atol=1e-5)
    assert out.params == {"selective": selective}


class TwoConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 1)
        self.conv2 = nn.Conv2d(2, 3, 1, bias=False)
        self.fc = nn.Linear(3, 2, bias=False)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.tensor([1.0, -1.5]).reshape(2, 1, 1, 1))
            self.conv1.bias.copy_(  # type: ignore[union-attr]
                torch.tensor([0.2, 0.9])
            )
            self.conv2.weight.copy_(torch.tensor([[1.0, 0.5], [-0.3, 2.0], [0.8, -0.6]]).reshape(3, 2, 1, 1))
            self.fc.weight.copy_(torch.tensor(V_W, dtype=torch.float32))
        self.eval()

    def forward(self, x):
        return self.fc(self.conv2(self.conv1(x)).mean(dim=(2, 3)))


def test_multi_layer_normgrad_multiplies_the_normalized_layer_maps(images):
    net = TwoConvNet()
    out = saliency.normgrad(net, torch.from_numpy(images), layer=["conv1", "conv2"], target=[1, 1])
    m = np.array([[1.0, 0.5], [-0.3, 2.0], [0.8, -0.6]])
    a1 = np.array([1.0, -1.5])[None, :, None, None] * images + np.array([0.2, 0.9])[None, :, None, None]
    a2 = np.einsum("jk,nkhw->njhw", m, a1)
    g2 = (V_W[1] / (H * W))[None, :, None, None]
    g1 = np.einsum("jk,j->k", m, V_W[1] / (H * W))[None, :, None, None]  # back through conv2
    one = hand_normalize(np.sqrt((np.maximum(a1 * g1, 0) ** 2).sum(axis=1)))
    two = hand_normalize(np.sqrt((np.maximum(a2 * g2, 0) ** 2).sum(axis=1)))
    np.testing.assert_allclose(out.maps, hand_normalize(one * two), atol=1e-5)
    assert out.layer == "conv1,conv2"


class LinearNet(nn.Module):
    """logits = flatten(x) @ Wᵀ: ∇_x S_c = W_c everywhere."""

    def __init__(self, weight: np.ndarray):
        super().__init__()
        self.weight = torch.tensor(weight, dtype=torch.float32)

    def forward(self, x):
        return x.flatten(1) @ self.weight.T


def test_smoothgrad_of_a_linear_model_is_the_weights_largest_channel(images):
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(3, 2 * H * W))
    x = np.concatenate([images, images[:, :, ::-1]], axis=1).copy()  # two channels
    out = saliency.smoothgrad(LinearNet(weight), torch.from_numpy(x), target=[2, 0], copies=3)
    expected = [hand_normalize(np.abs(weight[c].reshape(2, H, W)).max(axis=0)) for c in (2, 0)]
    np.testing.assert_allclose(out.maps, np.stack(expected), atol=1e-5)
    assert out.layer is None


def occlusion_by_hand(x, weight, c, k, s, fill, score):
    """Every window in a plain loop: starts 0, s, … and a last one flush with the edge."""
    starts = sorted(set(range(0, H - k + 1, s)) | {H - k})

    def value(img):
        z = weight @ img.reshape(-1).astype(np.float64)
        if score == "logit":
            return z[c]
        p = np.exp(z - z.max())
        return (p / p.sum())[c]

    total, count = np.zeros((H, W)), np.zeros((H, W))
    for i in starts:
        for j in starts:
            covered = x.copy()
            covered[:, i : i + k, j : j + k] = np.asarray(fill)[:, None, None]
            total[i : i + k, j : j + k] += value(x) - value(covered)
            count[i : i + k, j : j + k] += 1
    return hand_normalize(total / count)


@pytest.mark.parametrize("score", ["logit", "probability"])
def test_occlusion_of_a_linear_model_is_the_weight_times_patch_contribution(images, score):
    rng = np.random.default_rng(2)
    weight = rng.normal(size=(3, H * W))
    model = LinearNet(weight)

    def predict(batch: np.ndarray) -> np.ndarray:  # numpy in and out, as ONNX Runtime
        return model(torch.from_numpy(batch)).numpy()

    out = saliency.occlusion(
        predict, images, fill=[0.5], window=4, stride=3, target=[1, 2], score=score, batch_size=5
    )
    expected = [occlusion_by_hand(images[n], weight, c, 4, 3, [0.5], score) for n, c in enumerate([1, 2])]
    np.testing.assert_allclose(out.maps, np.stack(expected), atol=1e-5)
    assert out.params == {"window": 4, "stride": 3, "fill": [0.5], "score": score}
    if score == "logit":  # Δ_w = Σ_{u∈w} W_c(u)·(x_u − fill): linear in the patch
        one_window = saliency.occlusion(
            predict, images, fill=[0.5], window=H, stride=1, target=[1, 2], score="logit"
        )
        assert np.all(one_window.maps == 0)  # a single window: a constant map becomes 0


def test_occlusion_windows_follow_the_protocol_sizes():
    assert saliency.occlusion_window(32, 32) == (8, 4)
    assert saliency.occlusion_window(224, 224) == (32, 16)
    assert saliency.occlusion_window(8, 8) == (2, 1)


def test_normalize_upsamples_bilinearly_without_aligned_corners():
    out = saliency.normalize(torch.tensor([[[0.0, 2.0]]]), (1, 4))
    np.testing.assert_allclose(out, [[[0.0, 0.25, 0.75, 1.0]]], atol=1e-6)
    assert np.all(saliency.normalize(torch.full((1, 3, 3), 5.0), (3, 3)) == 0)
    assert np.all(saliency.normalize(torch.full((1, 3, 3), -5.0), (3, 3)) == 0)  # ReLU first


def test_bad_input_names_what_is_wrong(images):
    net = PoolNet(A_W, B_W, V_W)
    with pytest.raises(ValueError, match="no layer 'layer9'.*conv"):
        saliency.gradcam(net, images, layer="layer9")
    with pytest.raises(ValueError, match="targets must lie in 0–1"):
        saliency.gradcampp(net, images, layer="conv", target=[0, 5])
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        saliency.gradcam(net, images[0], layer="conv")
    with pytest.raises(ValueError, match="fill needs 1 values"):
        saliency.occlusion(lambda b: net(torch.from_numpy(b)), images, fill=[0.1, 0.2])
    with pytest.raises(ValueError, match="unknown saliency method"):
        saliency.explain("lime", net, images)
    with pytest.raises(ValueError, match="no Conv2d"):
        saliency.default_layer(LinearNet(np.ones((2, H * W))))


def test_default_layer_is_a_resnets_layer4_else_the_last_conv():
    assert saliency.default_layer(TwoConvNet()) == "conv2"
    resnet = nn.Module()
    resnet.layer4 = nn.Sequential(nn.Conv2d(1, 1, 1))
    resnet.head = nn.Conv2d(1, 1, 1)
    assert saliency.default_layer(resnet) == "layer4"
    # behind a wrapper that normalizes first (the library architectures, most .pt2 exports):
    # its layer4, not the last convolution inside it
    wrapped = nn.Module()
    wrapped.net = resnet
    assert saliency.default_layer(wrapped) == "net.layer4"


class _Body(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer4 = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), nn.Conv2d(2, 2, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(x)


class _Wrapped(nn.Module):
    """A network behind its own preprocessing: its layer4 is ``net.layer4``."""

    def __init__(self):
        super().__init__()
        self.net = _Body()
        self.head = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(x - 0.5).mean(dim=(2, 3)))


def test_an_exported_wrappers_layer4_is_found_in_its_graph():
    x = torch.rand(2, 1, 4, 4)
    graph = torch.export.export(_Wrapped().eval(), (x,)).module()
    node, name = saliency.graph_layer(graph)
    assert name == "net.layer4" and node == "relu_1"  # layer4's output, after its last convolution


class _Shrinking(nn.Module):
    """layer3 halves 4×4 to 2×2, layer4 to 1×1: an ImageNet ResNet's shape on small images."""

    def __init__(self):
        super().__init__()
        self.layer3 = nn.Sequential(nn.Conv2d(1, 2, 2, stride=2), nn.ReLU())
        self.layer4 = nn.Sequential(nn.Conv2d(2, 2, 2, stride=2), nn.ReLU())
        self.head = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer4(self.layer3(x)).mean(dim=(2, 3)))


def test_a_layer4_of_one_cell_gives_way_to_layer3_in_the_module_and_the_graph():
    x = torch.rand(2, 1, 4, 4)
    net = _Shrinking().eval()
    assert saliency.default_layer(net) == "layer4"  # without images the shape is unknown
    assert saliency.default_layer(net, x) == "layer3"
    assert saliency.default_layer(net, torch.rand(1, 1, 8, 8)) == "layer4"  # 2×2 at 8×8
    assert saliency.gradcampp(net, x).layer == "layer3"
    graph = torch.export.export(net, (x,)).module()
    assert saliency.graph_layer(graph)[1] == "layer3"


def test_quantize_averages_areas_into_16_by_16_bytes():
    maps = np.zeros((1, 32, 32), dtype=np.float32)
    maps[0, :2, :2] = 1.0  # one 2×2 block: one cell of 16×16 at full value
    maps[0, 2:4, 0:2] = [[1.0, 0.0], [0.0, 0.0]]  # a quarter of one cell
    q = saliency.quantize(maps)
    assert q.shape == (1, 16, 16) and q.dtype == np.uint8
    assert q[0, 0, 0] == 255 and q[0, 1, 0] == 64 and q.sum() == 255 + 64
    small = saliency.quantize(np.array([[[0.0, 1.0], [0.5, 0.0]]], dtype=np.float32), side=4)
    assert small[0].tolist() == [[0, 0, 255, 255], [0, 0, 255, 255], [128, 128, 0, 0], [128, 128, 0, 0]]


def test_an_exported_programs_graph_gives_the_eager_modules_cam_on_the_same_layer(images):
    net = PoolNet(A_W, B_W, V_W)
    x = torch.from_numpy(images)
    graph = torch.export.export(net, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},)).module()
    out = saliency.explain_graph("gradcam++", graph, x, layer="conv", target=[0, 1])
    np.testing.assert_allclose(
        out.maps, saliency.gradcampp(net, x, layer="conv", target=[0, 1]).maps, atol=1e-5
    )
    assert out.layer == "conv" and out.params == {"graph_node": "conv2d"}
    two = torch.export.export(TwoConvNet(), (x,)).module()
    assert saliency.graph_layer(two) == ("conv2d_1", "conv2")  # default: the last convolution
    with pytest.raises(ValueError, match="no 4-D activation inside 'layer9'"):
        saliency.graph_layer(two, "layer9")
