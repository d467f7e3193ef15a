"""Unit tests: no Ray, no servers; the folders mirror ``factory/``.

A package (as are its folders, and ``tests/integration``) so that a test module of the same
name in both kinds, such as ``test_shards.py``, imports as two modules (``unit.formats.test_shards``
and ``integration.test_shards``) under pytest's default import mode. ``tests/`` itself is not a
package: it stays on ``sys.path``, where ``conftest`` and ``helpers`` are imported from.
"""
