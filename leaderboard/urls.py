from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from leaderboard import health
from leaderboard.accounts import views as accounts
from leaderboard.boards import difficulty_views
from leaderboard.boards import views as boards
from leaderboard.boards.weighted_views import weighted_ranking
from leaderboard.runners import views as runners
from leaderboard.submissions import views as submissions

runner_api = [
    path("jobs/<int:job_id>/claim/", runners.claim, name="runner-claim"),
    path("jobs/<int:job_id>/heartbeat/", runners.heartbeat, name="runner-heartbeat"),
    path("jobs/<int:job_id>/artifact/", runners.artifact, name="runner-artifact"),
    path("jobs/<int:job_id>/result/", runners.result, name="runner-result"),
    path("jobs/<int:job_id>/fail/", runners.fail, name="runner-fail"),
    path("jobs/<int:job_id>/per-image/", runners.per_image, name="runner-per-image"),
    path("nodes/heartbeat/", runners.node_heartbeat, name="runner-node-heartbeat"),
    path("register/", runners.register, name="runner-register"),
]

urlpatterns = [
    path("", boards.home, name="home"),
    path("b/<slug:slug>/", boards.benchmark, name="benchmark"),
    path("b/<slug:slug>/export.<str:fmt>", boards.board_export, name="board-export"),
    path("b/<slug:slug>/weighted/", weighted_ranking, name="benchmark-weighted"),
    path("s/<int:pk>/export.<str:fmt>", boards.submission_export, name="submission-export"),
    path("s/<int:pk>/badge.svg", boards.badge, name="submission-badge"),
    path("b/<slug:slug>/hardest/<slug:task>/", difficulty_views.hardest, name="task-hardest"),
    path("s/<int:pk>/failures/<slug:task>/", difficulty_views.failures, name="submission-failures"),
    path("s/<int:pk>/thumbs/<int:job_id>/<int:position>.png", difficulty_views.thumbnail, name="submission-thumb"),
    path("s/<int:pk>/saliency/<int:job_id>/<int:position>.png", difficulty_views.saliency_overlay,
         name="submission-saliency"),
    path("compare/", boards.compare, name="compare"),
    path("optimizers/profiles/", boards.optimizer_profiles, name="optimizer-profiles"),
    path("submit/", submissions.submit, name="submit"),
    path("s/<int:pk>/", submissions.detail, name="submission-detail"),
    path("s/<int:pk>/status.json", submissions.status_json, name="submission-status"),
    path("s/<int:pk>/samples/<int:job_id>/<int:index>/<str:kind>.png", submissions.sample_png,
         name="submission-sample"),
    path("s/<int:pk>/cancel/", submissions.cancel, name="submission-cancel"),
    path("me/submissions/", submissions.mine, name="my-submissions"),
    path("runners/", runners.runners_page, name="runners"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/signup/", accounts.signup, name="signup"),
    path("accounts/tokens/", accounts.tokens, name="tokens"),
    path("accounts/tokens/<int:pk>/revoke/", accounts.revoke_token, name="revoke-token"),
    path("api/v1/", include("leaderboard.api.urls")),
    path("api/runner/v1/", include(runner_api)),
    path("admin/", admin.site.urls),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
]

handler404 = "leaderboard.errors.not_found"
handler500 = "leaderboard.errors.crashed"
