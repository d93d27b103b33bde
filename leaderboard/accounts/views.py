from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from .models import ApiToken


def signup(request):
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user)
        messages.success(request, "Welcome! You can submit now.")
        return redirect("home")
    return render(request, "accounts/signup.html", {"form": form})


@login_required
def tokens(request):
    raw = None
    if request.method == "POST":
        _, raw = ApiToken.issue(user=request.user, name=(request.POST.get("name") or "default")[:100])
    return render(request, "accounts/tokens.html", {"tokens": request.user.api_tokens.all(), "new_token": raw})


@login_required
@require_POST
def revoke_token(request, pk: int):
    request.user.api_tokens.filter(pk=pk).delete()
    messages.info(request, "Token revoked.")
    return redirect("tokens")
