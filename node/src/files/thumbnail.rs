//! Image previews: PNG thumbnails of PNG, JPEG, GIF and WebP images, decoded by the `image`
//! crate under a pixel and memory limit (decompression bombs are refused, not decoded).

use std::io::Cursor;
use std::path::Path;

use image::{ImageFormat, ImageReader, Limits};

/// What the node learned about an image.
#[derive(Debug, Default)]
pub(crate) struct Preview {
    /// Width and height, from the header.
    pub(crate) dimensions: Option<(u32, u32)>,
    /// The PNG preview, if one was made.
    pub(crate) png: Option<Vec<u8>>,
}

fn format(mime: &str) -> Option<ImageFormat> {
    Some(match mime {
        "image/png" => ImageFormat::Png,
        "image/jpeg" => ImageFormat::Jpeg,
        "image/gif" => ImageFormat::Gif,
        "image/webp" => ImageFormat::WebP,
        _ => return None,
    })
}

/// Reads the image at `path` (of type `mime`) and makes a preview whose longer side is at
/// most `size`, unless the image has more than `max_pixels` pixels. Blocking: run it on the
/// blocking pool. Anything unreadable simply gets no preview.
pub(crate) fn make(path: &Path, mime: &str, size: u32, max_pixels: u64) -> Preview {
    let Some(format) = format(mime) else {
        return Preview::default();
    };
    let open = || -> image::ImageResult<ImageReader<std::io::BufReader<std::fs::File>>> {
        let mut r = ImageReader::open(path)?;
        r.set_format(format);
        Ok(r)
    };
    let Ok((w, h)) = open().and_then(|r| r.into_dimensions()) else {
        return Preview::default();
    };
    let mut preview = Preview {
        dimensions: Some((w, h)),
        png: None,
    };
    if u64::from(w) * u64::from(h) > max_pixels {
        return preview;
    }
    let decoded = open().and_then(|mut r| {
        let mut limits = Limits::default();
        limits.max_image_width = Some(w);
        limits.max_image_height = Some(h);
        // Four bytes per pixel plus the decoder's own buffers.
        limits.max_alloc = Some(max_pixels.saturating_mul(5));
        r.limits(limits);
        r.decode()
    });
    match decoded {
        Ok(img) => {
            let mut out = Cursor::new(Vec::new());
            if img
                .thumbnail(size, size)
                .write_to(&mut out, ImageFormat::Png)
                .is_ok()
            {
                preview.png = Some(out.into_inner());
            }
        }
        Err(e) => tracing::debug!(error = %e, "no preview: the image does not decode"),
    }
    preview
}
