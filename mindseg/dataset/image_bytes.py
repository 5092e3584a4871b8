"""What an image file's bytes say before any decoding for training: whether they are a complete
decodable image, and its size (the COCO reader and the MindRecord converter check every file)."""
import io

_JPEG_SOI = b"\xff\xd8"
_JPEG_SOS = b"\xff\xda"
_JPEG_EOI = b"\xff\xd9"


def check_image_bytes(data):
    """Return why ``data`` is not a complete decodable image, or None when it is fine.

    Decodes JPEGs at 1/8 scale (about 1 ms for 640x480) so truncated or corrupt files are found
    without paying for a full decode. A JPEG without an end marker after its last scan is
    reported as truncated even where PIL is set to load truncated images.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        return "unreadable image: the file is empty"
    try:
        image = Image.open(io.BytesIO(data))
        if image.format == "JPEG":
            image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()
    except UnidentifiedImageError:
        return "unreadable image: not a known image format"
    except (OSError, SyntaxError, ValueError) as err:
        return f"unreadable image: {err}"
    if data.startswith(_JPEG_SOI) and data.rfind(_JPEG_EOI) < data.rfind(_JPEG_SOS):
        return "unreadable image: truncated JPEG (no end marker after the last scan)"
    return None


def image_size_of_bytes(data):
    """``(height, width)`` from the image header, without decoding."""
    from PIL import Image

    width, height = Image.open(io.BytesIO(data)).size
    return height, width
