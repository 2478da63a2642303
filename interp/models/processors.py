"""Processors that load without optional video dependencies."""

from __future__ import annotations


def image_only(base):
    """A Qwen2(-.5)-VL processor class that needs no video processor: the stock one demands torchvision for
    videos, which images never use."""

    class ImageOnly(base):
        # Keep the real class name so save_pretrained writes a config AutoProcessor can load back.
        __qualname__ = base.__qualname__

        @classmethod
        def get_attributes(cls):
            return [a for a in super().get_attributes() if a != "video_processor"]

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kw):
            self.video_processor = None
            base.__init__(self, image_processor, tokenizer, video_processor=None, chat_template=chat_template, **kw)

    ImageOnly.__name__ = base.__name__
    return ImageOnly
