"""insightface verification .bin: round trip, Python 2 files, and refusal of code in pickles."""

import codecs
import os
import pickle

import numpy as np
import pytest

from factory.errors import FormatError
from factory.formats.images import encode_jpeg, encode_png, resize
from factory.formats.verification_bin import VerificationSet, read_bin, write_bin


def _pngs(count, size=20):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]
    return images, [encode_png(image) for image in images]


def test_round_trip_and_decode(tmp_path):
    arrays, encoded = _pngs(4)
    uri = str(tmp_path / "lfw.bin")
    write_bin(uri, encoded, [True, False])
    pairs = read_bin(uri)
    assert isinstance(pairs, VerificationSet)
    assert pairs.name == "lfw" and pairs.num_pairs == 2
    assert pairs.images == encoded and pairs.issame == [True, False]
    assert all(type(flag) is bool for flag in pairs.issame)
    decoded = pairs.decode(16)
    assert decoded.shape == (4, 16, 16, 3) and decoded.dtype == np.uint8
    for index, array in enumerate(arrays):
        np.testing.assert_array_equal(decoded[index], resize(array, 16))
    np.testing.assert_array_equal(pairs.decode(20)[3], arrays[3])


def test_written_file_is_what_insightface_loads(tmp_path):
    uri = tmp_path / "cfp_fp.bin"
    _, encoded = _pngs(2)
    write_bin(str(uri), encoded, [1])
    bins, issame = pickle.loads(uri.read_bytes())
    assert bins == encoded and issame == [True]


def test_write_refuses_mismatched_lengths(tmp_path):
    with pytest.raises(ValueError):
        write_bin(str(tmp_path / "x.bin"), [b"a", b"b", b"c"], [True])
    assert not (tmp_path / "x.bin").exists()


def test_python3_protocol2_pickle_with_codecs_encode_is_accepted(tmp_path):
    jpeg = encode_jpeg(np.full((8, 8, 3), 100, np.uint8))
    other = encode_jpeg(np.full((8, 8, 3), 200, np.uint8))
    data = pickle.dumps(([jpeg, other], (True,)), protocol=2)
    assert b"_codecs" in data and b"encode" in data  # bytes spelled as _codecs.encode(str, latin1)
    (tmp_path / "old.bin").write_bytes(data)
    pairs = read_bin(str(tmp_path / "old.bin"))
    assert pairs.images == [jpeg, other] and pairs.issame == [True]
    assert abs(int(pairs.decode(8)[1].mean()) - 200) <= 3


def test_bytearray_images_are_accepted(tmp_path):
    data = pickle.dumps(([bytearray(b"ab"), b"cd"], [False]), protocol=5)
    (tmp_path / "ba.bin").write_bytes(data)
    assert read_bin(str(tmp_path / "ba.bin")).images == [b"ab", b"cd"]


def test_python2_pickle_with_byte_strings_is_accepted(tmp_path):
    """Opcodes as Python 2 writes them: str as SHORT_BINSTRING, non-ASCII bytes included."""
    first, second = b"\xff\xd8first", b"\x89PNGsecond"
    data = (b"\x80\x02]q\x00(U" + bytes([len(first)]) + first
            + b"U" + bytes([len(second)]) + second + b"e]q\x01(I00\ne\x86q\x02.")
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(data)  # Python 3's default decodes py2 str as ASCII text
    (tmp_path / "agedb_30.bin").write_bytes(data)
    pairs = read_bin(str(tmp_path / "agedb_30.bin"))
    assert pairs.images == [first, second] and pairs.issame == [False]
    assert pairs.name == "agedb_30"


class _Shell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Eval:
    def __reduce__(self):
        return eval, ("__import__('os').getpid()",)


def test_code_execution_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    uri = tmp_path / "evil.bin"
    uri.write_bytes(pickle.dumps(([_Shell(marker), b"x"], [True])))
    with pytest.raises(FormatError) as info:
        read_bin(str(uri))
    message = str(info.value)
    assert str(uri) in message and "system" in message and "refused" in message
    assert not marker.exists()
    pickle.loads(uri.read_bytes())  # the payload is real: a plain unpickler runs it
    assert marker.exists()


@pytest.mark.parametrize("protocol", [2, 4])
def test_eval_pickle_is_refused(tmp_path, protocol):
    uri = tmp_path / "evil.bin"
    uri.write_bytes(pickle.dumps(([b"x", _Eval()], [True]), protocol=protocol))
    with pytest.raises(FormatError, match=r"refused pickle global (__builtin__|builtins)\.eval"):
        read_bin(str(uri))


def test_codecs_encode_with_other_codec_is_refused(tmp_path):
    class Rot13:
        def __reduce__(self):
            return codecs.encode, ("text", "rot13")

    uri = tmp_path / "odd.bin"
    uri.write_bytes(pickle.dumps(([Rot13(), b"x"], [True])))
    with pytest.raises(FormatError, match="odd.bin"):
        read_bin(str(uri))


@pytest.mark.parametrize("payload, match", [
    ({"images": [], "issame": []}, "found dict"),
    (([b"a", b"b"], [True], "extra"), "found tuple"),
    ((b"ab", [True]), "found \\(bytes, list\\)"),
    ((["a", "b"], [True]), "image 0 is str"),
    (([b"a", b"b"], [2]), "issame\\[0\\]"),
    (([b"a", b"b"], ["yes"]), "issame\\[0\\]"),
    (([b"a", b"b", b"c"], [True]), "3 images for 1 pairs"),
    (([], []), "at least one pair"),
])
def test_wrong_structure_is_a_format_error(tmp_path, payload, match):
    uri = tmp_path / "bad.bin"
    uri.write_bytes(pickle.dumps(payload))
    with pytest.raises(FormatError, match=match) as info:
        read_bin(str(uri))
    assert str(uri) in str(info.value)


def test_int_flags_are_accepted_as_bools(tmp_path):
    uri = tmp_path / "ints.bin"
    uri.write_bytes(pickle.dumps(((b"a", b"b", b"c", b"d"), (1, 0))))
    assert read_bin(str(uri)).issame == [True, False]


@pytest.mark.parametrize("content", [b"\x89PNG not a pickle at all", b"", b"\x80\x04\x95"])
def test_not_a_pickle_is_a_format_error(tmp_path, content):
    uri = tmp_path / "only.bin"
    uri.write_bytes(content)
    with pytest.raises(FormatError) as info:
        read_bin(str(uri))
    assert str(uri) in str(info.value) and "\n" not in str(info.value)


def test_missing_file_is_a_format_error(tmp_path):
    with pytest.raises(FormatError, match="nope.bin"):
        read_bin(str(tmp_path / "nope.bin"))


def test_undecodable_image_names_the_file(tmp_path):
    uri = str(tmp_path / "broken.bin")
    write_bin(uri, [b"junk", b"junk"], [True])
    with pytest.raises(FormatError, match="broken.bin: image 0"):
        read_bin(uri).decode(8)
