//! Tests for `images.rs`. Every input is built here with the `image` encoders and `img-parts`;
//! no binary fixtures.

use std::io::Cursor;
use std::time::{Duration, Instant};

use bytes::Bytes;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Rgb, RgbImage, Rgba, RgbaImage};
use img_parts::ImageEXIF;
use img_parts::jpeg::{Jpeg, JpegSegment, markers};
use img_parts::png::{Png, PngChunk};
use img_parts::riff::{RiffChunk, RiffContent};
use img_parts::webp::{CHUNK_EXIF, CHUNK_VP8L, CHUNK_VP8X, CHUNK_XMP, WebP};

use super::*;

fn rgb(w: u32, h: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
        Rgb([(x * 7) as u8, (y * 13) as u8, ((x + y) * 3) as u8])
    }))
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    if format == ImageFormat::WebP {
        let encoder = image::codecs::webp::WebPEncoder::new_lossless(&mut out);
        img.write_with_encoder(encoder).unwrap();
    } else {
        img.write_to(&mut Cursor::new(&mut out), format).unwrap();
    }
    out
}

/// Little-endian EXIF: IFD0 with Orientation and a GPS IFD pointer; the GPS IFD holds
/// GPSLatitudeRef "N" and GPSMapDatum "GPSSECRET-WGS84".
fn exif_with_gps(orientation: u16) -> Vec<u8> {
    let mut t = b"II*\0".to_vec();
    t.extend_from_slice(&8u32.to_le_bytes());
    let entry = |t: &mut Vec<u8>, tag: u16, kind: u16, count: u32, value: [u8; 4]| {
        t.extend_from_slice(&tag.to_le_bytes());
        t.extend_from_slice(&kind.to_le_bytes());
        t.extend_from_slice(&count.to_le_bytes());
        t.extend_from_slice(&value);
    };
    t.extend_from_slice(&2u16.to_le_bytes());
    let o = orientation.to_le_bytes();
    entry(&mut t, 0x0112, 3, 1, [o[0], o[1], 0, 0]);
    entry(&mut t, 0x8825, 4, 1, 38u32.to_le_bytes());
    t.extend_from_slice(&0u32.to_le_bytes());
    assert_eq!(t.len(), 38);
    t.extend_from_slice(&2u16.to_le_bytes());
    entry(&mut t, 0x0001, 2, 2, *b"N\0\0\0");
    entry(&mut t, 0x0012, 2, 16, 68u32.to_le_bytes());
    t.extend_from_slice(&0u32.to_le_bytes());
    t.extend_from_slice(b"GPSSECRET-WGS84\0");
    t
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn decoder_orientation(bytes: &[u8], format: ImageFormat) -> Orientation {
    let mut decoder = ImageReader::with_format(Cursor::new(bytes), format)
        .into_decoder()
        .unwrap();
    decoder.orientation().unwrap()
}

fn is_coding(s: &JpegSegment) -> bool {
    !(markers::APP0..=markers::APP15).contains(&s.marker()) && s.marker() != markers::COM
}

fn seg(marker: u8, contents: &[u8]) -> JpegSegment {
    JpegSegment::new_with_contents(marker, Bytes::copy_from_slice(contents))
}

#[test]
fn jpeg_metadata_is_stripped_and_orientation_kept() {
    let original = Jpeg::from_bytes(encode(&rgb(32, 16), ImageFormat::Jpeg).into()).unwrap();
    let coding: Vec<JpegSegment> = original
        .segments()
        .iter()
        .filter(|s| is_coding(s))
        .cloned()
        .collect();

    let mut jpeg = original.clone();
    let mut exif = b"Exif\0\0".to_vec();
    exif.extend_from_slice(&exif_with_gps(6));
    let mut ext_xmp = b"http://ns.adobe.com/xmp/extension/\0".to_vec();
    ext_xmp.extend_from_slice(&[b'A'; 32]);
    ext_xmp.extend_from_slice(b"\0\0\0\x10\0\0\0\0XMPEXTSECRET");
    let extra = [
        seg(markers::APP1, &exif),
        seg(
            markers::APP1,
            b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta>XMPSECRET</x:xmpmeta>",
        ),
        seg(markers::APP1, &ext_xmp),
        seg(
            markers::APP13,
            b"Photoshop 3.0\08BIM\x04\x04\0\0\0\0\0\x0e\x1c\x02\x78\0\x0aIPTCSECRET",
        ),
        seg(markers::COM, b"COMMENTSECRET"),
        seg(markers::APP2, b"ICC_PROFILE\0\x01\x01FAKEICC"),
        seg(markers::APP0, b"JFXX\0\x10JFXXSECRET"),
    ];
    // A JFIF segment with a 1 × 1 embedded thumbnail.
    let jfif = jpeg
        .segments_mut()
        .iter_mut()
        .find(|s| s.marker() == markers::APP0)
        .unwrap();
    let mut contents = jfif.contents()[..12].to_vec();
    contents.extend_from_slice(b"\x01\x01JFT");
    *jfif = seg(markers::APP0, &contents);
    let at = jpeg
        .segments()
        .iter()
        .position(|s| s.marker() != markers::APP0)
        .unwrap();
    jpeg.segments_mut().splice(at..at, extra);
    let mut input = jpeg.encoder().bytes().to_vec();
    input.extend_from_slice(b"TRAILERSECRET");
    assert!(contains(&input, b"GPSSECRET"));

    let out = strip_metadata(ImageKind::Jpeg, input.into()).unwrap();
    for secret in [
        &b"GPSSECRET"[..],
        b"XMPSECRET",
        b"XMPEXTSECRET",
        b"ns.adobe.com",
        b"IPTCSECRET",
        b"Photoshop",
        b"COMMENTSECRET",
        b"JFXXSECRET",
        b"JFT",
        b"TRAILERSECRET",
    ] {
        assert!(
            !contains(&out, secret),
            "{}",
            String::from_utf8_lossy(secret)
        );
    }
    assert!(contains(&out, b"FAKEICC"));
    let parsed = Jpeg::from_bytes(out.clone()).unwrap();
    let out_coding: Vec<JpegSegment> = parsed
        .segments()
        .iter()
        .filter(|s| is_coding(s))
        .cloned()
        .collect();
    assert_eq!(
        out_coding, coding,
        "quantisation, frame and scan data must be byte-identical"
    );
    assert_eq!(exif_orientation(&parsed.exif().unwrap()), Some(6));
    assert_eq!(
        decoder_orientation(&out, ImageFormat::Jpeg),
        Orientation::Rotate90
    );
    assert_eq!(image::load_from_memory(&out).unwrap().width(), 32);
}

#[test]
fn jpeg_upright_photo_gets_no_exif() {
    let mut jpeg = Jpeg::from_bytes(encode(&rgb(8, 8), ImageFormat::Jpeg).into()).unwrap();
    jpeg.set_exif(Some(exif_with_gps(1).into()));
    let out = strip_metadata(ImageKind::Jpeg, jpeg.encoder().bytes()).unwrap();
    assert!(Jpeg::from_bytes(out).unwrap().exif().is_none());
}

#[test]
fn jpeg_segments_between_progressive_scans_are_dropped() {
    let mut input = encode(&rgb(8, 8), ImageFormat::Jpeg);
    let eoi = input.len() - 2;
    assert_eq!(&input[eoi..], b"\xFF\xD9");
    // A COM segment and an APP1 placed after the scan data, before EOI.
    let tail = b"\xFF\xFE\0\x0dLATECOMMENT\xFF\xE1\0\x0aLATE-XMP\xFF\xD9";
    input.splice(eoi.., tail.iter().copied());
    let out = strip_metadata(ImageKind::Jpeg, input.into()).unwrap();
    assert!(!contains(&out, b"LATECOMMENT") && !contains(&out, b"LATE-XMP"));
    assert!(out.ends_with(b"\xFF\xD9"));
    image::load_from_memory(&out).unwrap();
}

#[test]
fn png_metadata_is_stripped_and_orientation_kept() {
    let original = Png::from_bytes(encode(&rgb(8, 4), ImageFormat::Png).into()).unwrap();
    let idat: Vec<PngChunk> = original.chunks_by_type(*b"IDAT").cloned().collect();
    assert!(!idat.is_empty());

    let mut png = original.clone();
    let chunk =
        |kind: &[u8; 4], contents: &[u8]| PngChunk::new(*kind, Bytes::copy_from_slice(contents));
    let extra = [
        chunk(b"eXIf", &exif_with_gps(6)),
        chunk(b"tEXt", b"Comment\0PNGTEXTSECRET"),
        chunk(b"zTXt", b"Comment\0\0ZTXTSECRET"),
        chunk(
            b"iTXt",
            b"XML:com.adobe.xmp\0\0\0\0\0<x:xmpmeta>PNGXMPSECRET</x:xmpmeta>",
        ),
        chunk(b"tIME", b"\x07\xe9\x01\x02\x03\x04\x05"),
    ];
    png.chunks_mut().splice(1..1, extra);
    let mut input = png.encoder().bytes().to_vec();
    input.extend_from_slice(b"AFTERIENDSECRET");

    let out = strip_metadata(ImageKind::Png, input.into()).unwrap();
    for secret in [
        &b"GPSSECRET"[..],
        b"PNGTEXTSECRET",
        b"ZTXTSECRET",
        b"PNGXMPSECRET",
        b"tIME",
        b"AFTERIENDSECRET",
    ] {
        assert!(
            !contains(&out, secret),
            "{}",
            String::from_utf8_lossy(secret)
        );
    }
    let parsed = Png::from_bytes(out.clone()).unwrap();
    let out_idat: Vec<PngChunk> = parsed.chunks_by_type(*b"IDAT").cloned().collect();
    assert_eq!(out_idat, idat);
    assert_eq!(exif_orientation(&parsed.exif().unwrap()), Some(6));
    assert_eq!(
        decoder_orientation(&out, ImageFormat::Png),
        Orientation::Rotate90
    );
    image::load_from_memory(&out).unwrap();
}

#[test]
fn webp_metadata_is_stripped_and_flags_fixed() {
    let original = WebP::from_bytes(encode(&rgb(8, 4), ImageFormat::WebP).into()).unwrap();
    let vp8l = original
        .chunk_by_id(CHUNK_VP8L)
        .cloned()
        .expect("lossless webp");

    for orientation in [6, 1] {
        let mut webp = original.clone();
        webp.set_exif(Some(exif_with_gps(orientation).into()));
        let xmp = RiffContent::Data(Bytes::from_static(b"<x:xmpmeta>WEBPXMPSECRET</x:xmpmeta>"));
        webp.chunks_mut().push(RiffChunk::new(CHUNK_XMP, xmp));
        if let Some(RiffContent::Data(data)) = webp.chunks_mut().get_mut(0).map(|c| c.content_mut())
        {
            let mut flags = data.to_vec();
            flags[0] |= 0x04 | 0x08;
            *data = flags.into();
        }
        let input = webp.encoder().bytes();
        assert!(contains(&input, b"GPSSECRET"));
        image::load_from_memory(&input).unwrap();

        let out = strip_metadata(ImageKind::Webp, input).unwrap();
        assert!(!contains(&out, b"GPSSECRET") && !contains(&out, b"WEBPXMPSECRET"));
        let parsed = WebP::from_bytes(out.clone()).unwrap();
        assert_eq!(parsed.chunk_by_id(CHUNK_VP8L), Some(&vp8l));
        assert!(!parsed.has_chunk(CHUNK_XMP));
        if orientation == 6 {
            let flags = parsed
                .chunk_by_id(CHUNK_VP8X)
                .unwrap()
                .content()
                .data()
                .unwrap()[0];
            assert_eq!(flags & 0x0C, 0x08, "EXIF flag set, XMP flag clear");
            assert_eq!(exif_orientation(&parsed.exif().unwrap()), Some(6));
            assert_eq!(
                decoder_orientation(&out, ImageFormat::WebP),
                Orientation::Rotate90
            );
        } else {
            // Nothing extended is left: back to the simple lossless format.
            assert!(!parsed.has_chunk(CHUNK_EXIF) && !parsed.has_chunk(CHUNK_VP8X));
        }
        let img = image::load_from_memory(&out).unwrap();
        assert_eq!((img.width(), img.height()), (8, 4));
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn huge_declared_size_is_rejected_before_decoding() {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&50_000u32.to_be_bytes());
    ihdr.extend_from_slice(&50_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0d".to_vec();
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    assert_eq!(
        PngChunk::new(*b"IHDR", Bytes::copy_from_slice(&ihdr[4..]))
            .encoder()
            .bytes()[..],
        png[8..]
    );

    let start = Instant::now();
    let limits = Limits::default();
    let too_large = ImageError::TooLarge {
        width: 50_000,
        height: 50_000,
    };
    assert_eq!(dimensions(&png, &limits), Err(too_large.clone()));
    assert_eq!(thumbnail(&png, 100, 100, &limits), Err(too_large.clone()));
    assert_eq!(too_large.code(), "image_too_large");
    // 9,000 × 9,000 fits each side but not 40 megapixels.
    png[16..24].copy_from_slice(&[0, 0, 0x23, 0x28, 0, 0, 0x23, 0x28]);
    assert!(matches!(
        dimensions(&png, &limits),
        Err(ImageError::TooLarge { width: 9000, .. })
    ));
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn truncated_and_foreign_input_is_an_error_not_a_panic() {
    let jpeg = encode(&rgb(16, 16), ImageFormat::Jpeg);
    let limits = Limits::default();
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    for cut in [3, 20, sof + 6] {
        let head = &jpeg[..cut];
        let err = strip_metadata(ImageKind::Jpeg, Bytes::copy_from_slice(head)).unwrap_err();
        assert_eq!(err.code(), "image_corrupt", "cut at {cut}");
        assert_eq!(
            dimensions(head, &limits).unwrap_err().code(),
            "image_corrupt"
        );
        assert_eq!(
            thumbnail(head, 8, 8, &limits).unwrap_err().code(),
            "image_corrupt"
        );
    }
    // Cut inside the scan data: the header is fine; decoding may fail or pad, but not panic.
    let _ = thumbnail(&jpeg[..jpeg.len() - 40], 8, 8, &limits);
    assert_eq!(
        dimensions(b"%PDF-1.7", &limits),
        Err(ImageError::Unsupported)
    );
    assert_eq!(ImageError::Unsupported.code(), "image_unsupported");
    let gif = Bytes::from(encode(&rgb(4, 4), ImageFormat::Gif));
    assert_eq!(
        strip_metadata(ImageKind::Gif, gif),
        Err(ImageError::Unsupported)
    );
    let png = encode(&rgb(4, 4), ImageFormat::Png);
    assert_eq!(
        strip_metadata(ImageKind::Jpeg, png.into())
            .unwrap_err()
            .code(),
        "image_corrupt"
    );
}

#[test]
fn thumbnails_fit_orient_and_pick_a_format() {
    let limits = Limits::default();
    let wide = encode(&rgb(400, 200), ImageFormat::Png);
    assert_eq!(dimensions(&wide, &limits), Ok((400, 200)));
    let t = thumbnail(&wide, 100, 100, &limits).unwrap();
    assert_eq!((t.width, t.height, t.kind), (100, 50, ImageKind::Jpeg));
    let img = image::load_from_memory_with_format(&t.bytes, ImageFormat::Jpeg).unwrap();
    assert_eq!((img.width(), img.height()), (100, 50));

    // Never upscaled.
    let small = encode(&rgb(10, 10), ImageFormat::Gif);
    let t = thumbnail(&small, 100, 100, &limits).unwrap();
    assert_eq!((t.width, t.height), (10, 10));

    // Orientation 6 turns a 40 × 20 landscape into a portrait.
    let mut jpeg = Jpeg::from_bytes(encode(&rgb(40, 20), ImageFormat::Jpeg).into()).unwrap();
    jpeg.set_exif(Some(orientation_exif(6)));
    let rotated = jpeg.encoder().bytes();
    let t = thumbnail(&rotated, 100, 100, &limits).unwrap();
    assert_eq!((t.width, t.height), (20, 40));
    let t = thumbnail(&rotated, 10, 10, &limits).unwrap();
    assert_eq!((t.width, t.height), (5, 10));

    // Transparency keeps PNG; an opaque alpha channel does not.
    let translucent =
        RgbaImage::from_fn(30, 30, |x, _| Rgba([9, 9, 9, if x < 15 { 0 } else { 255 }]));
    let t = thumbnail(
        &encode(&translucent.into(), ImageFormat::Png),
        10,
        10,
        &limits,
    )
    .unwrap();
    assert_eq!(t.kind, ImageKind::Png);
    image::load_from_memory_with_format(&t.bytes, ImageFormat::Png).unwrap();
    let opaque = RgbaImage::from_pixel(30, 30, Rgba([9, 9, 9, 255]));
    let t = thumbnail(&encode(&opaque.into(), ImageFormat::WebP), 10, 10, &limits).unwrap();
    assert_eq!((t.kind, t.width), (ImageKind::Jpeg, 10));
}

#[test]
fn fit_keeps_the_aspect_ratio() {
    assert_eq!(fit(400, 200, 100, 100), (100, 50));
    assert_eq!(fit(200, 400, 100, 100), (50, 100));
    assert_eq!(fit(10, 10, 100, 100), (10, 10));
    assert_eq!(fit(1, 10_000, 100, 100), (1, 100));
    assert_eq!(fit(3_000, 1, 100, 100), (100, 1));
}

#[test]
fn orientation_parser_is_robust() {
    let exif = exif_with_gps(6);
    assert_eq!(exif_orientation(&exif), Some(6));
    let mut prefixed = b"Exif\0\0".to_vec();
    prefixed.extend_from_slice(&exif);
    assert_eq!(exif_orientation(&prefixed), Some(6));
    let be = b"MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x08\0\0\0\0\0\0";
    assert_eq!(exif_orientation(be), Some(8));
    assert_eq!(exif_orientation(&orientation_exif(3)), Some(3));
    for cut in 0..exif.len() {
        assert!(matches!(exif_orientation(&exif[..cut]), None | Some(6)));
    }
    let mut bad = exif.clone();
    bad[18..20].copy_from_slice(&9u16.to_le_bytes());
    assert_eq!(exif_orientation(&bad), None);
    let mut huge_count = exif.clone();
    huge_count[8..10].copy_from_slice(&u16::MAX.to_le_bytes());
    huge_count[10..12].copy_from_slice(&0x0100u16.to_le_bytes());
    assert_eq!(exif_orientation(&huge_count), None);
    let mut far = exif;
    far[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(exif_orientation(&far), None);
}

#[test]
fn mutated_inputs_never_panic() {
    let mut webp = WebP::from_bytes(encode(&rgb(12, 6), ImageFormat::WebP).into()).unwrap();
    webp.set_exif(Some(exif_with_gps(6).into()));
    let mut jpeg = Jpeg::from_bytes(encode(&rgb(12, 6), ImageFormat::Jpeg).into()).unwrap();
    jpeg.set_exif(Some(exif_with_gps(6).into()));
    let mut png = Png::from_bytes(encode(&rgb(12, 6), ImageFormat::Png).into()).unwrap();
    png.set_exif(Some(exif_with_gps(6).into()));
    let seeds = [
        (ImageKind::Jpeg, jpeg.encoder().bytes().to_vec()),
        (ImageKind::Png, png.encoder().bytes().to_vec()),
        (ImageKind::Webp, webp.encoder().bytes().to_vec()),
        (ImageKind::Png, encode(&rgb(12, 6), ImageFormat::Gif)),
    ];
    let limits = Limits {
        max_width: 256,
        max_height: 256,
        max_pixels: 65_536,
        max_alloc: 1 << 20,
    };
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut ok = [0usize; 3];
    for round in 0..400 {
        let (kind, seed) = &seeds[round % seeds.len()];
        let mut data = seed.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % data.len() as u64) as usize;
            data[at] = next() as u8;
        }
        if round % 3 == 0 {
            data.truncate((next() % data.len() as u64) as usize);
        }
        ok[0] += usize::from(strip_metadata(*kind, Bytes::from(data.clone())).is_ok());
        ok[1] += usize::from(dimensions(&data, &limits).is_ok());
        ok[2] += usize::from(thumbnail(&data, 8, 8, &limits).is_ok());
    }
    // The mutations must leave many inputs valid enough to reach the deeper code.
    assert!(ok.iter().all(|&n| n > 40), "{ok:?}");
}
