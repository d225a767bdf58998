"""The structured item error and advice that reads right in Python and on the command line."""

import pickle
import threading

import pytest

from sktransfer._messages import ItemError, flag_style, flags_on, setting


def test_advice_is_python_outside_the_cli_and_flags_inside():
    assert setting("on_error", "nan") == "on_error='nan'"
    assert setting("value_range", (0, 255), owner="ImageEncoder") == "ImageEncoder(value_range=(0, 255))"
    with flag_style():
        assert flags_on()
        assert setting("on_error", "nan") == "--on-error nan"
        assert setting("value_range", (0, 255), owner="ImageEncoder") == "--value-range 0,255"
        assert setting("value_range", (-1.0, 1.0)) == "--value-range=-1,1"  # argparse reads "-1" as a flag
        assert setting("value_range", None, shown="(low, high)") == "--value-range LOW,HIGH"
    assert not flags_on()


def test_an_item_error_keeps_index_item_and_reason_through_pickling():
    lock = threading.Lock()  # cannot be pickled: its description travels instead
    error = ItemError("TextEncoder could not read the item at index 3", 3, lock, "not a string")
    copy = pickle.loads(pickle.dumps(error.located("partition 2 of 4")))
    assert isinstance(copy, ValueError)
    assert (copy.index, copy.reason) == (3, "not a string") and copy.item == repr(lock)
    assert str(copy) == "TextEncoder could not read the item at index 3 [partition 2 of 4]"
    with pytest.raises(ValueError, match=r"index 3 \[partition"):
        raise copy
