from __future__ import annotations

import json

from django import forms

from leaderboard.benchmarks.models import Benchmark

from .models import Submission


class SubmissionForm(forms.Form):
    benchmark = forms.ModelChoiceField(
        queryset=Benchmark.objects.filter(is_active=True), to_field_name="slug",
        help_text="Your submission is evaluated on every task of this benchmark.",
    )
    name = forms.CharField(max_length=120, help_text="How it appears on the leaderboard.")
    artifact = forms.FileField(
        label="File",
        help_text="Optimizers: one .py file defining make_optimizer(params, **hparams). Classifiers and "
        "denoisers: TorchScript (.pt), an ExportedProgram (.pt2) or ONNX (.onnx); classifiers also a .safetensors "
        "state dict of a torchvision or timm architecture named in the hyperparameters. Pickles are refused.",
    )
    hparams = forms.CharField(
        label="Hyperparameters (JSON)", required=False, initial="{}",
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        help_text='A JSON object. Optimizers: the keyword arguments of make_optimizer, e.g. {"lr": 0.001, '
        '"betas": [0.9, 0.999]}. Classifiers and denoisers: evaluation settings only, e.g. {"precision": "bf16"} '
        '(see "What the file must do" below). A .safetensors classifier names its architecture and '
        'preprocessing: {"architecture": "torchvision:resnet18", "num_classes": 10, "mean": [0.485, 0.456, 0.406], '
        '"std": [0.229, 0.224, 0.225]}.',
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 4}))
    paper_url = forms.URLField(required=False, label="Paper link", assume_scheme="https")
    code_url = forms.URLField(required=False, label="Code link", assume_scheme="https")
    model_family = forms.CharField(required=False, max_length=60, help_text="e.g. ResNet, ViT, Adam-like.")
    visibility = forms.ChoiceField(choices=Submission.Visibility.choices, initial=Submission.Visibility.PUBLIC)

    def clean_hparams(self):
        raw = (self.cleaned_data.get("hparams") or "").strip() or "{}"
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # json raises RecursionError for deep nesting
            raise forms.ValidationError(
                "This is not valid JSON (%(error)s).", code="invalid_json", params={"error": exc}
            ) from exc
        if not isinstance(value, dict):
            raise forms.ValidationError('Give a JSON object, e.g. {"lr": 0.001}.', code="not_object")
        return value
