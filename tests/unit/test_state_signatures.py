"""The Django methods that streamed models patch, pinned against the installed Django.

The streamed ``save_base`` and ``bulk_create`` read Django's options by name
(``signatures.call_arguments``); ``bulk_update``, ``update`` and ``delete`` are
overridden with Django's own parameters. If Django renames, moves, removes or
adds a parameter of one of these methods, a pin below fails: review the patch
(a new ``bulk_create`` option may change which rows are written, so which
events are true), then update the pin.
"""

from __future__ import annotations

import inspect

import pytest
from django.db import models

from durable_streams.state import StreamedQuerySet
from durable_streams.state.signatures import call_arguments
from tests.stateapp.models import Flag, Room

PINNED = [
    pytest.param(
        models.Model.save_base,
        "(self, raw=False, force_insert=False, force_update=False, using=None, update_fields=None)",
        id="save_base",
    ),
    pytest.param(
        models.QuerySet.bulk_create,
        "(self, objs, batch_size=None, ignore_conflicts=False, update_conflicts=False,"
        " update_fields=None, unique_fields=None)",
        id="bulk_create",
    ),
    pytest.param(
        models.QuerySet.bulk_update, "(self, objs, fields, batch_size=None)", id="bulk_update"
    ),
    pytest.param(models.QuerySet.update, "(self, **kwargs)", id="update"),
    pytest.param(models.QuerySet.delete, "(self)", id="delete"),
]


@pytest.mark.parametrize(("method", "signature"), PINNED)
def test_the_patched_django_methods_have_the_parameters_the_patches_were_written_for(
    method, signature
):
    assert str(inspect.signature(method)) == signature


@pytest.mark.parametrize("name", ["bulk_update", "update", "delete"])
def test_streamed_querysets_override_with_the_parameters_of_django(name):
    def parameters(method):
        # Annotations aside: ours are typed, Django's are not.
        return [(p.name, p.kind, p.default) for p in inspect.signature(method).parameters.values()]

    assert parameters(getattr(StreamedQuerySet, name)) == parameters(getattr(models.QuerySet, name))


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        pytest.param((False, False, False, "elsewhere"), {}, id="positional"),
        pytest.param((), {"using": "elsewhere"}, id="keyword"),
        pytest.param((True,), {"update_fields": None, "using": "elsewhere"}, id="mixed"),
    ],
)
def test_save_base_options_are_read_by_name_however_they_are_passed(args, kwargs):
    room = Room(name="r")
    options = call_arguments(models.Model.save_base, (room, *args), kwargs)
    assert options["using"] == "elsewhere"
    assert options["force_insert"] is False


def test_an_override_taking_star_args_passes_keywords_through():
    def save_base(self, *args, **kwargs):
        raise AssertionError("never called")

    assert call_arguments(save_base, (Room(),), {"using": "elsewhere"})["using"] == "elsewhere"
    assert "using" not in call_arguments(save_base, (Room(),), {})


def test_bulk_create_options_are_read_from_a_bound_method_with_defaults_filled_in():
    queryset = models.QuerySet(Flag)
    options = call_arguments(
        queryset.bulk_create, ([], None, False, True), {"unique_fields": ["slug"]}
    )
    assert options["update_conflicts"] is True
    assert options["unique_fields"] == ["slug"]
    assert options["ignore_conflicts"] is False
    assert options["update_fields"] is None


def test_arguments_that_do_not_fit_the_signature_fail_like_the_call():
    with pytest.raises(TypeError, match="unexpected keyword argument 'conflicts'"):
        call_arguments(models.QuerySet(Flag).bulk_create, ([],), {"conflicts": True})
