"""The API's errors are the JSON its schema documents, whatever went wrong and whatever DEBUG is:
an unknown path is a JSON 404, a bad query parameter a 400 with messages per parameter, and the
schema states each parameter's limits (the inputs schemathesis found against a live server)."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("debug", [True, False])
@pytest.mark.parametrize("path", [
    "/api/v1/benchmarks/%C3%A9t%C3%A9/",  # not a slug: no route matches
    "/api/v1/benchmarks/digits/leaderboard/x/",
    "/api/v1/submissions/not-a-number/",
    "/api/v1/nothing-here/",
    "/api/runner/v1/jobs/x/claim/",
])
def test_a_path_no_route_matches_under_the_api_gets_a_json_404(client, catalogue, settings, debug, path):
    settings.DEBUG = debug
    response = client.get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json" and response.json() == {"detail": "Not found."}


def test_pages_outside_the_api_keep_their_html_404(client, settings):
    settings.DEBUG = True
    response = client.get("/no-such-page/")
    assert response.status_code == 404 and response["Content-Type"].startswith("text/html")


def test_a_method_the_runner_api_does_not_take_gets_json_with_its_allow_header(client):
    response = client.get("/api/runner/v1/jobs/1/claim/")
    assert response.status_code == 405 and response.json() == {"detail": "Method Not Allowed."}
    assert "POST" in response["Allow"]


@pytest.mark.parametrize("query, field", [
    ("offset=null&offset=null", "offset"),
    ("offset=-510511", "offset"),
    ("offset=99999999999999999999999", "offset"),
    ("limit=-1", "limit"),
    ("limit=ten", "limit"),
    ("dir=sideways", "dir"),
    ("sort=top1;drop", "sort"),
])
def test_a_bad_query_parameter_gets_a_400_with_messages_for_that_parameter(client, catalogue, query, field):
    response = client.get(f"/api/v1/benchmarks/digits/leaderboard/?{query}")
    assert response.status_code == 400
    body = response.json()
    # the documented shape: a list of messages per parameter (it was one bare string, against the schema)
    assert list(body) == [field] and isinstance(body[field], list) and all(isinstance(m, str) for m in body[field])


def test_good_query_parameters_still_page_and_sort_the_board(client, catalogue):
    body = client.get("/api/v1/benchmarks/digits/leaderboard/?offset=0&limit=100000&dir=&sort=top1").json()
    assert body["offset"] == 0 and body["limit"] == 500
    assert client.get("/api/v1/benchmarks/digits/leaderboard/?limit=0").json()["limit"] == 50


def test_the_schema_documents_the_limits_and_the_errors_the_api_answers_with(client):
    schema = client.get("/api/v1/schema/?format=json").json()
    board = schema["paths"]["/api/v1/benchmarks/{slug}/leaderboard/"]["get"]
    params = {p["name"]: p["schema"] for p in board["parameters"]}
    assert params["offset"]["minimum"] == 0 and params["limit"]["minimum"] == 0
    assert params["dir"]["enum"] == ["asc", "desc"] or set(params["dir"]["enum"]) >= {"asc", "desc"}
    bad_request = board["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert set(schema["components"]["schemas"][bad_request]["properties"]) == {"task", "offset", "limit", "sort", "dir"}
    upload = schema["paths"]["/api/v1/submissions/"]["post"]["requestBody"]["content"]
    assert list(upload) == ["multipart/form-data"]
    form = schema["components"]["schemas"][upload["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[-1]]
    assert form["properties"]["artifact"]["format"] == "binary"
    assert "503" in schema["paths"]["/api/v1/submissions/"]["post"]["responses"]
