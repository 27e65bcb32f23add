"""tf_setup: the project's own warnings print as one line."""


def test_project_warnings_print_as_one_line():
    import warnings

    import tf_setup  # noqa: F401  (the entry scripts import it, through siamese_network_funcs)
    assert (warnings.formatwarning("skipping a/notes.txt: not an image file", UserWarning,
                                   "prepare_data.py", 50)
            == "warning: skipping a/notes.txt: not an image file\n")
    other = warnings.formatwarning("old API", DeprecationWarning, "lib.py", 7)
    assert "DeprecationWarning" in other and "lib.py:7" in other

