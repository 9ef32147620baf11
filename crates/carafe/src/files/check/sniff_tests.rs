//! Tests for `sniff.rs`: minimal real headers for each kind, built in code.

use super::*;

fn png() -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0".to_vec();
    v.extend_from_slice(&[0x1f, 0x15, 0xc4, 0x89]);
    v
}

fn pe() -> Vec<u8> {
    let mut v = vec![0u8; 256];
    v[..2].copy_from_slice(b"MZ");
    v[0x3c] = 0x80;
    v[0x80..0x84].copy_from_slice(b"PE\0\0");
    v
}

fn gif() -> Vec<u8> {
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;".to_vec()
}

fn ftyp(brand: &[u8; 4]) -> Vec<u8> {
    let mut v = b"\0\0\0\x18ftyp".to_vec();
    v.extend_from_slice(brand);
    v.extend_from_slice(b"\0\0\0\0");
    v.extend_from_slice(brand);
    v.extend_from_slice(b"mif1\0\0\0\x08free");
    v
}

fn ooxml(dir: &str) -> Vec<u8> {
    let mut v = Vec::new();
    let (rels, doc) = (
        format!("{dir}/_rels/document.xml.rels"),
        format!("{dir}/document.xml"),
    );
    // infer takes the OOXML flavour from the fourth entry, as in real files.
    for name in ["[Content_Types].xml", "_rels/.rels", &rels, &doc] {
        let mut h = b"PK\x03\x04\x14\0\0\0\x08\0\0\0\0\0\0\0\0\0".to_vec();
        h.extend_from_slice(&4u32.to_le_bytes()); // compressed size
        h.extend_from_slice(&4u32.to_le_bytes()); // uncompressed size
        h.extend_from_slice(&(name.len() as u16).to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(name.as_bytes());
        h.extend_from_slice(b"\x03\0\0\0");
        v.extend_from_slice(&h);
    }
    v.resize(v.len() + 64, 0);
    v
}

#[test]
fn binary_kinds_from_magic() {
    let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
    elf.resize(64, 0);
    let mut webm = b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x84webm".to_vec();
    webm.resize(300, 0);
    let mut riff_webp = b"RIFF\x24\0\0\0WEBPVP8L\x0d\0\0\0\x2f\0\0\0\x10".to_vec();
    riff_webp.resize(44, 0);
    let cases: Vec<(Vec<u8>, Kind)> = vec![
        (png(), Kind::Png),
        (
            b"\xff\xd8\xff\xe0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0".to_vec(),
            Kind::Jpeg,
        ),
        (gif(), Kind::Gif),
        (riff_webp, Kind::Webp),
        (
            b"BM\x3a\0\0\0\0\0\0\0\x36\0\0\0\x28\0\0\0".to_vec(),
            Kind::Bmp,
        ),
        (b"II*\0\x08\0\0\0\x01\0\0\x01\x03\0".to_vec(), Kind::Tiff),
        (ftyp(b"heic"), Kind::Heic),
        (ftyp(b"avif"), Kind::Avif),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj".to_vec(), Kind::Pdf),
        (b"PK\x03\x04\x14\0\0\0\x08\0\0\0\0\0".to_vec(), Kind::Zip),
        (b"\x1f\x8b\x08\0\0\0\0\0\0\x03".to_vec(), Kind::Gzip),
        (ooxml("word"), Kind::Docx),
        (ooxml("xl"), Kind::Xlsx),
        (ooxml("ppt"), Kind::Pptx),
        (ftyp(b"isom"), Kind::Mp4),
        (b"\0\0\0\x14ftypqt  \0\0\0\0qt  ".to_vec(), Kind::Mov),
        (webm, Kind::Webm),
        (b"ID3\x04\0\0\0\0\0\x0f\xff\xfb".to_vec(), Kind::Mp3),
        (b"RIFF\x24\0\0\0WAVEfmt \x10\0\0\0".to_vec(), Kind::Wav),
        (pe(), Kind::Exe),
        (elf, Kind::Exe),
        (
            b"\xcf\xfa\xed\xfe\x07\0\0\x01\x03\0\0\0".to_vec(),
            Kind::Exe,
        ),
    ];
    for (bytes, kind) in cases {
        assert_eq!(detect(&bytes), kind, "{kind}");
        assert_eq!(inspect(&bytes, Some(kind.extensions()[0])), Ok(kind));
    }
}

#[test]
fn markup_kinds() {
    let cases: [(&[u8], Kind); 9] = [
        (b"\xef\xbb\xbf  <!DOCTYPE html><p>hi", Kind::Html),
        (b"\n<HTML lang=en>", Kind::Html),
        (b"<script>alert(1)</script>", Kind::Html),
        (b"<iframe src=x>", Kind::Html),
        (b"<svg xmlns='http://www.w3.org/2000/svg'>", Kind::Svg),
        (b"<?xml version='1.0'?>\n<svg xmlns='x'/>", Kind::Svg),
        (b"<?xml version='1.0'?>\n<feed/>", Kind::Xml),
        (b"<!-- c -->\n<html>", Kind::Html),
        (b"<bogus>", Kind::Txt),
    ];
    for (bytes, kind) in cases {
        assert_eq!(detect(bytes), kind, "{}", String::from_utf8_lossy(bytes));
    }
}

#[test]
fn text_kinds() {
    let korean = "안녕하세요, 세계!\n파일 업로드 테스트입니다.\n".as_bytes();
    assert_eq!(detect(korean), Kind::Txt);
    assert_eq!(inspect(korean, Some("txt")), Ok(Kind::Txt));
    // A multi-byte character cut off by the end of the head is still text.
    assert_eq!(detect(&korean[..4]), Kind::Txt);
    assert_eq!(detect(b"a\0b\0c\0"), Kind::Unknown);
    assert_eq!(detect(b"hello\x1b[31mred"), Kind::Unknown);
    assert_eq!(detect_with_hint(b"a,b\n1,2\n", Some("csv")), Kind::Csv);
    assert_eq!(detect_with_hint(b"a,b\n1,2\n", Some("txt")), Kind::Txt);
    assert_eq!(detect_with_hint(b" {\"a\": 1}", Some("JSON")), Kind::Json);
    assert_eq!(detect_with_hint(b" {\"a\": 1}", None), Kind::Txt);
    assert_eq!(detect_with_hint(b"plain", Some("json")), Kind::Txt);
    // Short magic numbers at the start of ordinary text do not make it binary.
    assert_eq!(detect(b"BMW service notes\n"), Kind::Txt);
    assert_eq!(detect(b"MZ-80 memory map\n"), Kind::Txt);
    assert_eq!(detect(b"abcdmoov and more text"), Kind::Txt);
    assert_eq!(detect(b"01234567WEBP text"), Kind::Txt);
    assert_eq!(detect(b""), Kind::Txt);
}

#[test]
fn extension_checks() {
    assert_eq!(extension("invoice.pdf.exe").as_deref(), Some("exe"));
    assert_eq!(extension("dir.d/Photo.JPG").as_deref(), Some("jpg"));
    assert_eq!(extension("evil.exe. . ").as_deref(), Some("exe"));
    assert_eq!(extension(".bashrc"), None);
    assert_eq!(extension("README"), None);
    assert_eq!(extension("a.b c"), None);

    let ext = extension("invoice.pdf.exe");
    assert_eq!(inspect(&pe(), ext.as_deref()), Ok(Kind::Exe));
    let err = inspect(&pe(), Some("pdf")).unwrap_err();
    assert_eq!(err.code(), "extension_mismatch");

    let err = inspect(&png(), Some("pdf")).unwrap_err();
    assert_eq!(err.code(), "extension_mismatch");
    assert_eq!(
        err,
        Mismatch::ExtensionMismatch {
            kind: Kind::Png,
            ext: "pdf".into()
        }
    );
    let html = b"<!doctype html><script>alert(1)</script>";
    assert_eq!(detect_with_hint(html, Some("png")), Kind::Html);
    assert_eq!(
        inspect(html, Some("png")).unwrap_err().code(),
        "extension_mismatch"
    );

    assert_eq!(check_extension(Kind::Png, None), Ok(()));
    assert_eq!(check_extension(Kind::Jpeg, Some(".JFIF")), Ok(()));
    assert_eq!(check_extension(Kind::Txt, Some("py")), Ok(()));
    assert_eq!(
        check_extension(Kind::Txt, Some("png")).unwrap_err().code(),
        "extension_mismatch"
    );
    assert_eq!(
        check_extension(Kind::Txt, Some("html")).unwrap_err().code(),
        "extension_mismatch"
    );
    assert_eq!(
        check_extension(Kind::Unknown, Some("bin"))
            .unwrap_err()
            .code(),
        "type_unknown"
    );
    assert_eq!(
        inspect(b"\x00\x01\x02\x03", None).unwrap_err().code(),
        "type_unknown"
    );
}

#[test]
fn polyglots_are_dangerous() {
    let mut gifar = gif();
    gifar.extend_from_slice(b"<script>alert(document.domain)</script>");
    assert_eq!(detect(&gifar), Kind::Gif);
    let err = inspect(&gifar, Some("gif")).unwrap_err();
    assert_eq!(err.code(), "dangerous_content");
    assert_eq!(
        err,
        Mismatch::DangerousContent {
            kind: Kind::Gif,
            marker: "<script"
        }
    );

    // Past the first KiB of a binary file the marker is not looked for.
    let mut late = gif();
    late.resize(2048, 0);
    late.extend_from_slice(b"<script>");
    assert_eq!(inspect(&late, Some("gif")), Ok(Kind::Gif));

    let text = b"name,comment\nbob,hello <SVG onload=alert(1)>\n";
    assert_eq!(
        inspect(text, Some("csv")).unwrap_err().code(),
        "dangerous_content"
    );
    let text = b"just some notes\n<IFRAME src=//evil>";
    assert_eq!(
        inspect(text, Some("txt")).unwrap_err().code(),
        "dangerous_content"
    );
    assert_eq!(check_content(b"<svg></svg>", Kind::Svg), Ok(()));
    assert_eq!(
        check(Kind::Gif, &gifar, Some("gif")).unwrap_err().code(),
        "dangerous_content"
    );
    assert_eq!(
        check(Kind::Gif, &gifar, Some("png")).unwrap_err().code(),
        "extension_mismatch"
    );
}

#[test]
fn names_round_trip() {
    for kind in Kind::all() {
        assert_eq!(Kind::from_name(kind.name()), Some(kind));
        assert!(!kind.mime().is_empty());
        assert_eq!(kind.extensions().is_empty(), kind == Kind::Unknown);
    }
    assert_eq!(Kind::from_name("PNG"), Some(Kind::Png));
    assert_eq!(Kind::from_name("nope"), None);
    assert_eq!(Kind::Txt.mime(), "text/plain; charset=utf-8");
}
