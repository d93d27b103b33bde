"""Settings that would quietly misbehave are refused: a boolean variable that is no boolean, and
a job lease a single late heartbeat would lose."""
from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from leaderboard.checks import JOB_LEASE_TOO_SHORT, job_lease_covers_two_heartbeats
from leaderboard.settings import envbool


@pytest.mark.parametrize("value, expected", [("1", True), ("TRUE", True), (" yes ", True), ("on", True),
                                             ("0", False), ("False", False), ("no", False), ("OFF", False)])
def test_a_boolean_variable_reads_the_words_people_write(monkeypatch, value, expected):
    monkeypatch.setenv("SECURE_COOKIES", value)
    assert envbool("SECURE_COOKIES", not expected) is expected


@pytest.mark.parametrize("value", [None, "", "  "])
def test_an_unset_or_empty_boolean_variable_takes_its_default(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("SECURE_COOKIES", raising=False)
    else:
        monkeypatch.setenv("SECURE_COOKIES", value)
    assert envbool("SECURE_COOKIES", True) is True and envbool("SECURE_COOKIES", False) is False


def test_a_boolean_variable_with_a_word_it_does_not_know_is_refused_naming_the_variable_and_the_words(monkeypatch):
    monkeypatch.setenv("DEBUG", "flase")
    with pytest.raises(ImproperlyConfigured) as caught:
        envbool("DEBUG", False)
    message = str(caught.value)
    assert "DEBUG='flase'" in message and "1, true, yes, on" in message and "0, false, no, off" in message


def test_a_lease_of_two_heartbeats_or_more_passes_the_system_check(settings):
    settings.JOB_LEASE_SECONDS, settings.JOB_HEARTBEAT_SECONDS = 40, 20
    assert job_lease_covers_two_heartbeats() == []


def test_a_lease_shorter_than_two_heartbeats_fails_the_system_check_naming_both_settings(settings):
    settings.JOB_LEASE_SECONDS, settings.JOB_HEARTBEAT_SECONDS = 39, 20
    [error] = job_lease_covers_two_heartbeats()
    assert error.id == JOB_LEASE_TOO_SHORT and error.is_serious()
    assert "JOB_LEASE_SECONDS (39)" in error.msg and "JOB_HEARTBEAT_SECONDS 20" in error.msg
    with pytest.raises(SystemCheckError, match=JOB_LEASE_TOO_SHORT):  # registered: `manage.py check` refuses it
        call_command("check")
