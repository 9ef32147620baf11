//! Image handling for uploads: removes privacy-sensitive metadata (EXIF with GPS, XMP, IPTC,
//! comments) from JPEG/PNG/WebP without re-encoding the pixels, and makes thumbnails under
//! strict size limits so that a small "decompression bomb" cannot exhaust memory.
//!
//! Everything here is CPU-bound and synchronous: async callers must run it inside
//! `tokio::task::spawn_blocking` (ideally behind a semaphore sized to the CPU count).
//!
//! The only orientation information kept is a minimal EXIF block holding just the Orientation
//! tag, so that viewers still show the photo the right way up.

use std::io::Cursor;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};
use img_parts::jpeg::{Jpeg, JpegSegment, markers};
use img_parts::png::Png;
use img_parts::webp::{CHUNK_VP8X, CHUNK_XMP, WebP};
use img_parts::{ImageEXIF, riff::RiffContent};

/// Image containers: [`strip_metadata`] rewrites JPEG, PNG and WebP (GIF is
/// `image_unsupported` there); [`thumbnail`] produces PNG or JPEG.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageKind {
    Jpeg,
    Png,
    Webp,
    Gif,
}

impl ImageKind {
    /// The stable lowercase name (matches the sniffing kind names).
    pub fn name(self) -> &'static str {
        match self {
            ImageKind::Jpeg => "jpeg",
            ImageKind::Png => "png",
            ImageKind::Webp => "webp",
            ImageKind::Gif => "gif",
        }
    }

    /// The MIME type.
    pub fn mime(self) -> &'static str {
        match self {
            ImageKind::Jpeg => "image/jpeg",
            ImageKind::Png => "image/png",
            ImageKind::Webp => "image/webp",
            ImageKind::Gif => "image/gif",
        }
    }
}

/// Why an image could not be handled. `code()` gives the stable machine code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// `image_too_large`: the declared dimensions exceed the [`Limits`].
    #[error("image of {width}x{height} exceeds the size limits")]
    TooLarge { width: u32, height: u32 },
    /// `image_corrupt`: the data is truncated or malformed.
    #[error("image data is corrupt: {0}")]
    Corrupt(String),
    /// `image_unsupported`: not a format handled here.
    #[error("image format is not supported")]
    Unsupported,
}

impl ImageError {
    /// The stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            ImageError::TooLarge { .. } => "image_too_large",
            ImageError::Corrupt(_) => "image_corrupt",
            ImageError::Unsupported => "image_unsupported",
        }
    }
}

/// Decoder limits, checked against the header before any pixel is decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_width: u32,
    pub max_height: u32,
    /// Width × height.
    pub max_pixels: u64,
    /// Bytes the decoder may allocate (the decoded frame counts at 4 bytes a pixel or more).
    pub max_alloc: u64,
}

impl Default for Limits {
    /// 10,000 × 10,000, 40 megapixels, 256 MiB (as pict-rs).
    fn default() -> Self {
        Limits {
            max_width: 10_000,
            max_height: 10_000,
            max_pixels: 40_000_000,
            max_alloc: 256 * 1024 * 1024,
        }
    }
}

impl Limits {
    fn check(&self, (width, height): (u32, u32)) -> Result<(u32, u32), ImageError> {
        let pixels = u64::from(width) * u64::from(height);
        if width > self.max_width
            || height > self.max_height
            || pixels > self.max_pixels
            || pixels.saturating_mul(4) > self.max_alloc
        {
            return Err(ImageError::TooLarge { width, height });
        }
        Ok((width, height))
    }
}

/// A generated thumbnail: PNG when it has transparent pixels, JPEG otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub kind: ImageKind,
}

const TAG_ORIENTATION: u16 = 0x0112;
const EXIF_PREFIX: &[u8] = b"Exif\0\0";
const JPEG_QUALITY: u8 = 85;

/// Removes metadata from a JPEG, PNG or WebP without touching the compressed image data.
///
/// - JPEG: keeps JFIF (APP0 `JFIF`, minus any embedded thumbnail), ICC profiles (APP2
///   `ICC_PROFILE`), Adobe (APP14, needed for CMYK colour) and all coding segments; drops
///   every other APPn segment (EXIF, XMP and extended XMP, MPF, IPTC/Photoshop, JFXX
///   thumbnails…), COM segments, APPn/COM segments between progressive scans, and anything
///   after the end-of-image marker (appended trailers, motion-photo videos, polyglot
///   payloads).
/// - PNG: drops `eXIf`, `tEXt`, `zTXt`, `iTXt` (XMP lives there), `tIME`, `caBX` (C2PA) and
///   anything after `IEND`.
/// - WebP: drops the `EXIF` and `XMP ` chunks and fixes the VP8X flags.
///
/// When the original EXIF had an Orientation other than 1, a minimal EXIF holding only that
/// tag is put back.
pub fn strip_metadata(kind: ImageKind, input: Bytes) -> Result<Bytes, ImageError> {
    let corrupt = |e: img_parts::Error| ImageError::Corrupt(e.to_string());
    match kind {
        ImageKind::Jpeg => {
            let mut jpeg = Jpeg::from_bytes(input).map_err(corrupt)?;
            let orientation = jpeg.exif().and_then(|e| exif_orientation(&e));
            strip_jpeg(&mut jpeg);
            if let Some(o) = orientation.filter(|&o| o != 1) {
                jpeg.set_exif(Some(orientation_exif(o)));
            }
            Ok(jpeg.encoder().bytes())
        }
        ImageKind::Png => {
            let mut png = Png::from_bytes(input).map_err(corrupt)?;
            let orientation = png.exif().and_then(|e| exif_orientation(&e));
            png.chunks_mut().retain(|c| {
                !matches!(
                    &c.kind(),
                    b"eXIf" | b"tEXt" | b"zTXt" | b"iTXt" | b"tIME" | b"caBX"
                )
            });
            if let Some(o) = orientation.filter(|&o| o != 1) {
                png.set_exif(Some(orientation_exif(o)));
            }
            Ok(png.encoder().bytes())
        }
        ImageKind::Webp => {
            let mut webp = WebP::from_bytes(input).map_err(corrupt)?;
            let orientation = webp.exif().and_then(|e| exif_orientation(&e));
            webp.remove_chunks_by_id(CHUNK_XMP);
            // `set_exif` recomputes the ICC and EXIF flags of VP8X (and drops VP8X when no
            // extended feature is left), but not the XMP flag: that one is cleared below.
            webp.set_exif(orientation.filter(|&o| o != 1).map(orientation_exif));
            for chunk in webp
                .chunks_mut()
                .iter_mut()
                .filter(|c| c.id() == CHUNK_VP8X)
            {
                if let RiffContent::Data(data) = chunk.content_mut()
                    && let Some(&flags) = data.first()
                {
                    let mut fixed = BytesMut::from(&data[..]);
                    fixed[0] = flags & !0x04;
                    *data = fixed.freeze();
                }
            }
            Ok(webp.encoder().bytes())
        }
        ImageKind::Gif => Err(ImageError::Unsupported),
    }
}

fn strip_jpeg(jpeg: &mut Jpeg) {
    jpeg.segments_mut().retain(|s| {
        let c = s.contents();
        match s.marker() {
            markers::APP0 => c.starts_with(b"JFIF\0"),
            markers::APP2 => c.starts_with(b"ICC_PROFILE\0"),
            markers::APP14 => c.starts_with(b"Adobe"),
            markers::APP1..=markers::APP15 | markers::COM => false,
            _ => true,
        }
    });
    // A JFIF segment may embed an uncompressed thumbnail (of the uncropped photo): keep the
    // 14-byte header with the thumbnail size set to 0 × 0.
    for seg in jpeg.segments_mut().iter_mut() {
        if seg.marker() == markers::APP0 && seg.contents().len() > 14 {
            let mut header = seg.contents().slice(..12).to_vec();
            header.extend_from_slice(&[0, 0]);
            *seg = JpegSegment::new_with_contents(markers::APP0, header.into());
        }
    }
    // img-parts keeps everything after the first scan header as that segment's "entropy".
    for seg in jpeg.segments_mut().iter_mut() {
        if seg.marker() != markers::SOS || !seg.has_entropy() {
            continue;
        }
        // The encoded segment is marker (2) + length (2) + header contents + entropy.
        let encoded = seg.clone().encoder().bytes();
        let entropy = encoded.slice((4 + seg.contents().len()).min(encoded.len())..);
        if let Some(ranges) = scan_tail(&entropy) {
            let mut kept = BytesMut::new();
            for r in ranges {
                kept.extend_from_slice(&entropy[r]);
            }
            *seg =
                JpegSegment::new_with_entropy(markers::SOS, seg.contents().clone(), kept.freeze());
        }
    }
}

/// Walks the data after the first scan header up to the end-of-image marker and returns the
/// byte ranges to keep: everything up to and including EOI, minus APPn/COM segments between
/// scans. `None` when no EOI is found (truncated stream); the data is then kept as it is.
fn scan_tail(data: &[u8]) -> Option<Vec<Range<usize>>> {
    let mut kept = Vec::new();
    let (mut start, mut i) = (0, 0);
    loop {
        let ff = i + data.get(i..)?.iter().position(|&b| b == 0xFF)?;
        let mut m = ff + 1;
        while *data.get(m)? == 0xFF {
            m += 1;
        }
        let marker = *data.get(m)?;
        i = m + 1;
        match marker {
            // Byte stuffing, restart markers, TEM: part of the entropy-coded data.
            0x00 | 0x01 | 0xD0..=0xD7 => {}
            markers::EOI => {
                kept.push(start..i);
                return Some(kept);
            }
            _ => {
                let len = usize::from(u16::from_be_bytes([*data.get(i)?, *data.get(i + 1)?]));
                let end = i
                    .checked_add(len)
                    .filter(|&e| len >= 2 && e <= data.len())?;
                if (markers::APP0..=markers::APP15).contains(&marker) || marker == markers::COM {
                    kept.push(start..ff);
                    start = end;
                }
                i = end;
            }
        }
    }
}

/// The Orientation (1–8) from a raw EXIF block (TIFF header, optionally after `Exif\0\0`):
/// IFD0's tag 0x0112 of type SHORT. `None` when absent, out of range or malformed.
pub fn exif_orientation(exif: &[u8]) -> Option<u16> {
    let tiff = exif.strip_prefix(EXIF_PREFIX).unwrap_or(exif);
    let le = match tiff.get(..4)? {
        b"II*\0" => true,
        b"MM\0*" => false,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b: [u8; 2] = tiff.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(if le {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = tiff.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let ifd = usize::try_from(u32_at(4)?).ok()?;
    let count = usize::from(u16_at(ifd)?);
    for n in 0..count {
        let entry = ifd.checked_add(2 + n * 12)?;
        if u16_at(entry)? != TAG_ORIENTATION {
            continue;
        }
        let (kind, values) = (u16_at(entry + 2)?, u32_at(entry + 4)?);
        let value = u16_at(entry + 8)?;
        return (kind == 3 && values >= 1 && (1..=8).contains(&value)).then_some(value);
    }
    None
}

/// A little-endian TIFF block with one IFD holding only the Orientation tag (26 bytes).
pub fn orientation_exif(orientation: u16) -> Bytes {
    let mut t = Vec::with_capacity(26);
    t.extend_from_slice(b"II*\0");
    t.extend_from_slice(&8u32.to_le_bytes());
    t.extend_from_slice(&1u16.to_le_bytes());
    t.extend_from_slice(&TAG_ORIENTATION.to_le_bytes());
    t.extend_from_slice(&3u16.to_le_bytes());
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(&orientation.to_le_bytes());
    t.extend_from_slice(&[0, 0]);
    t.extend_from_slice(&0u32.to_le_bytes());
    Bytes::from(t)
}

/// The width and height declared in the header of a PNG, JPEG, GIF or WebP, checked against
/// `limits`. Reads only the header bytes; decodes and allocates nothing.
pub fn dimensions(input: &[u8], limits: &Limits) -> Result<(u32, u32), ImageError> {
    let (_, dims) = header(input)?;
    limits.check(dims)
}

fn header(input: &[u8]) -> Result<(ImageFormat, (u32, u32)), ImageError> {
    let truncated = || ImageError::Corrupt("header is truncated or malformed".into());
    let (format, dims) = if input.starts_with(b"\x89PNG\r\n\x1a\n") {
        (ImageFormat::Png, png_size(input).ok_or_else(truncated)?)
    } else if input.starts_with(b"\xFF\xD8") {
        (ImageFormat::Jpeg, jpeg_size(input).ok_or_else(truncated)?)
    } else if input.starts_with(b"GIF87a") || input.starts_with(b"GIF89a") {
        let size = le16(input, 6).zip(le16(input, 8));
        (ImageFormat::Gif, size.ok_or_else(truncated)?)
    } else if input.starts_with(b"RIFF") && input.get(8..12) == Some(b"WEBP") {
        (ImageFormat::WebP, webp_size(input).ok_or_else(truncated)?)
    } else {
        return Err(ImageError::Unsupported);
    };
    if dims.0 == 0 || dims.1 == 0 {
        return Err(ImageError::Corrupt("zero image dimension".into()));
    }
    Ok((format, dims))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le16(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from(u16::from_le_bytes(
        b.get(at..at + 2)?.try_into().ok()?,
    )))
}

fn png_size(b: &[u8]) -> Option<(u32, u32)> {
    (b.get(12..16)? == b"IHDR").then_some(())?;
    Some((be32(b, 16)?, be32(b, 20)?))
}

fn jpeg_size(b: &[u8]) -> Option<(u32, u32)> {
    let mut i = 2;
    loop {
        while *b.get(i)? != 0xFF {
            i += 1;
        }
        while *b.get(i)? == 0xFF {
            i += 1;
        }
        let marker = *b.get(i)?;
        i += 1;
        match marker {
            0x01 | 0xD0..=0xD7 => continue,
            markers::SOS | markers::EOI => return None,
            0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                let h = u16::from_be_bytes([*b.get(i + 3)?, *b.get(i + 4)?]);
                let w = u16::from_be_bytes([*b.get(i + 5)?, *b.get(i + 6)?]);
                return Some((u32::from(w), u32::from(h)));
            }
            _ => i += usize::from(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?])),
        }
    }
}

fn webp_size(b: &[u8]) -> Option<(u32, u32)> {
    let data = b.get(20..)?;
    let u24 = |at: usize| -> Option<u32> {
        let p = data.get(at..at + 3)?;
        Some(u32::from(p[0]) | u32::from(p[1]) << 8 | u32::from(p[2]) << 16)
    };
    match b.get(12..16)? {
        b"VP8X" => Some((u24(4)? + 1, u24(7)? + 1)),
        b"VP8 " => {
            (data.get(3..6)? == [0x9D, 0x01, 0x2A]).then_some(())?;
            Some((le16(data, 6)? & 0x3FFF, le16(data, 8)? & 0x3FFF))
        }
        b"VP8L" => {
            (*data.first()? == 0x2F).then_some(())?;
            let bits = u32::from_le_bytes(data.get(1..5)?.try_into().ok()?);
            Some(((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1))
        }
        _ => None,
    }
}

/// Decodes an image (PNG, JPEG, GIF — first frame — or WebP), applies its EXIF orientation and
/// scales it to fit within `max_w` × `max_h`, keeping the aspect ratio and never upscaling.
///
/// The header is checked against `limits` before decoding, and the decoder runs with the same
/// limits. The result is PNG when it has transparent pixels, JPEG (quality 85) otherwise.
pub fn thumbnail(
    input: &[u8],
    max_w: u32,
    max_h: u32,
    limits: &Limits,
) -> Result<Thumbnail, ImageError> {
    let (format, dims) = header(input)?;
    let (width, height) = limits.check(dims)?;
    let too_large = || ImageError::TooLarge { width, height };
    let decode_err = |e: image::ImageError| match e {
        image::ImageError::Limits(_) => too_large(),
        image::ImageError::Unsupported(_) => ImageError::Unsupported,
        other => ImageError::Corrupt(other.to_string()),
    };

    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_image_width = Some(limits.max_width);
    decoder_limits.max_image_height = Some(limits.max_height);
    decoder_limits.max_alloc = Some(limits.max_alloc);
    let mut reader = ImageReader::with_format(Cursor::new(input), format);
    reader.limits(decoder_limits);
    let mut decoder = reader.into_decoder().map_err(decode_err)?;
    if decoder.dimensions() != (width, height) {
        limits.check(decoder.dimensions())?;
    }
    if decoder.total_bytes() > limits.max_alloc {
        return Err(too_large());
    }
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(decode_err)?;
    img.apply_orientation(orientation);

    let (w, h) = fit(img.width(), img.height(), max_w.max(1), max_h.max(1));
    if (w, h) != (img.width(), img.height()) {
        img = img.thumbnail_exact(w, h);
    }

    let mut bytes = Vec::new();
    let rgba = img.color().has_alpha().then(|| img.to_rgba8());
    let kind = if let Some(rgba) = rgba.filter(|i| i.pixels().any(|p| p.0[3] != 255)) {
        let encoder = image::codecs::png::PngEncoder::new(&mut bytes);
        DynamicImage::ImageRgba8(rgba)
            .write_with_encoder(encoder)
            .map_err(|e| ImageError::Corrupt(e.to_string()))?;
        ImageKind::Png
    } else {
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, JPEG_QUALITY);
        DynamicImage::ImageRgb8(img.to_rgb8())
            .write_with_encoder(encoder)
            .map_err(|e| ImageError::Corrupt(e.to_string()))?;
        ImageKind::Jpeg
    };
    Ok(Thumbnail {
        bytes,
        width: w,
        height: h,
        kind,
    })
}

/// The largest size within `max_w` × `max_h` with the aspect ratio of `w` × `h` (at least
/// 1 × 1), or `w` × `h` itself when it already fits.
fn fit(w: u32, h: u32, max_w: u32, max_h: u32) -> (u32, u32) {
    if w <= max_w && h <= max_h {
        return (w, h);
    }
    let (w64, h64) = (u64::from(w), u64::from(h));
    let scaled = |num: u64, mul: u64, den: u64| {
        u32::try_from((num * mul + den / 2) / den)
            .unwrap_or(u32::MAX)
            .max(1)
    };
    if w64 * u64::from(max_h) >= h64 * u64::from(max_w) {
        (max_w, scaled(h64, u64::from(max_w), w64))
    } else {
        (scaled(w64, u64::from(max_h), h64), max_h)
    }
}

#[cfg(test)]
#[path = "images_tests.rs"]
mod tests;
