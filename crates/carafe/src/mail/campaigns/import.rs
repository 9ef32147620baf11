//! Reading campaign recipients from a spreadsheet the way people export them: CSV (UTF-8,
//! with or without a byte-order mark; comma, semicolon or tab, whichever the header uses) or
//! XLSX (the first sheet). The first row names the columns; one is `email`, the others
//! become the recipient's template data. A bad row (no address, an invalid one, not UTF-8)
//! is reported with its row number and skipped; only an unreadable file fails the import.
//!
//! XLSX is read cell by cell (calamine's streaming reader), never as a whole range: a sheet
//! naming a far corner cell would otherwise allocate its whole bounding box. Its parts are
//! inflated once first with a cap, so a zip bomb is refused before anything keeps it.

use std::io::{Cursor, Read};

use carafe_core::campaigns::{BadRow, CampaignRecipient};
use serde_json::{Map, Value};

use super::MAX_IMPORT_ROWS;
use crate::mail::address::parse_mailbox;

/// The most an XLSX file may inflate to, all parts together.
pub const MAX_XLSX_INFLATED: u64 = 256 * 1024 * 1024;
/// Recipients handed over at once.
pub const BATCH: usize = 1000;

/// One batch of rows read: the recipients, the bad rows, and the data rows read so far.
#[derive(Debug, Default)]
pub struct Batch {
    pub recipients: Vec<CampaignRecipient>,
    pub bad: Vec<BadRow>,
    pub rows: u64,
}

/// Reads `bytes` (XLSX when it is a zip archive, else CSV), handing batches to `each` (which
/// answers false to stop). Rows up to `skip_through` were handled before and are skipped.
/// `Err` says why the file cannot be read at all.
pub fn read(
    bytes: &[u8],
    skip_through: u64,
    each: &mut dyn FnMut(Batch) -> bool,
) -> Result<(), String> {
    read_at_most(bytes, skip_through, MAX_IMPORT_ROWS, each)
}

/// `read`, refusing a file with more than `max_rows` data rows.
fn read_at_most(
    bytes: &[u8],
    skip_through: u64,
    max_rows: u64,
    each: &mut dyn FnMut(Batch) -> bool,
) -> Result<(), String> {
    let mut rows = Rows::new(skip_through, max_rows, each);
    if bytes.starts_with(b"PK\x03\x04") {
        read_xlsx(bytes, &mut rows)?;
    } else {
        read_csv(bytes, &mut rows)?;
    }
    rows.finish();
    Ok(())
}

/// Turns rows of cells into recipients, in batches.
struct Rows<'a> {
    header: Option<(usize, Vec<Option<String>>)>,
    skip_through: u64,
    max_rows: u64,
    batch: Batch,
    each: &'a mut dyn FnMut(Batch) -> bool,
    stopped: bool,
}

impl<'a> Rows<'a> {
    fn new(skip_through: u64, max_rows: u64, each: &'a mut dyn FnMut(Batch) -> bool) -> Self {
        Rows {
            header: None,
            skip_through,
            max_rows,
            batch: Batch::default(),
            each,
            stopped: false,
        }
    }

    /// Takes the header row: the `email` column's place and the data keys.
    fn header(&mut self, cells: Vec<Value>) -> Result<(), String> {
        let names: Vec<Option<String>> = cells
            .iter()
            .map(|c| {
                let s = text(c).trim().to_owned();
                (!s.is_empty()).then_some(s)
            })
            .collect();
        let email = names
            .iter()
            .position(|n| {
                n.as_deref()
                    .is_some_and(|n| ["email", "e-mail"].contains(&n.to_lowercase().as_str()))
            })
            .ok_or("the first row must name the columns, one of them \"email\"")?;
        self.header = Some((email, names));
        Ok(())
    }

    /// One data row, numbered as the spreadsheet numbers it (the header is row 1).
    fn row(&mut self, row: u64, cells: Result<Vec<Value>, String>) -> Result<(), String> {
        let Some((email_at, names)) = &self.header else {
            return match cells {
                Ok(c) if c.iter().all(|v| text(v).trim().is_empty()) => Ok(()),
                Ok(c) => self.header(c),
                Err(e) => Err(format!("the first row cannot be read: {e}")),
            };
        };
        if self.stopped || row <= self.skip_through {
            return Ok(());
        }
        let bad = |error: String| BadRow { row, error };
        match cells {
            Err(e) => self.batch.bad.push(bad(e)),
            Ok(cells) if cells.iter().all(|v| text(v).trim().is_empty()) => return Ok(()),
            Ok(cells) => {
                if self.batch.rows >= self.max_rows {
                    return Err(format!("more than {} rows", self.max_rows));
                }
                let address = cells.get(*email_at).map(text).unwrap_or_default();
                match parse_mailbox(address.trim()) {
                    Err(_) if address.trim().is_empty() => {
                        self.batch.bad.push(bad("no email address".into()))
                    }
                    Err(e) => self.batch.bad.push(bad(format!("email: {e}"))),
                    Ok(mailbox) => {
                        let mut data = Map::new();
                        for (name, value) in names.iter().zip(cells) {
                            if let Some(name) = name
                                && !value.is_null()
                            {
                                data.insert(name.clone(), value);
                            }
                        }
                        self.batch.recipients.push(CampaignRecipient {
                            row,
                            email: mailbox.email.to_string(),
                            data: Value::Object(data),
                        });
                    }
                }
            }
        }
        self.batch.rows += 1;
        if self.batch.recipients.len() + self.batch.bad.len() >= BATCH {
            self.flush();
        }
        Ok(())
    }

    fn flush(&mut self) {
        if self.stopped {
            return;
        }
        let rows = self.batch.rows;
        let batch = std::mem::replace(
            &mut self.batch,
            Batch {
                rows,
                ..Batch::default()
            },
        );
        self.stopped = !(self.each)(batch);
    }

    fn finish(mut self) {
        self.flush();
    }
}

/// A cell as text (for the header and the address).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The delimiter the header line uses most: comma, semicolon or tab.
fn delimiter(bytes: &[u8]) -> u8 {
    let line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    [b',', b';', b'\t']
        .into_iter()
        .max_by_key(|d| (line.iter().filter(|b| *b == d).count(), *d == b','))
        .unwrap_or(b',')
}

/// Line counting for CSV row numbers, done incrementally as records come in order.
#[derive(Default)]
struct Lines {
    /// Bytes already counted, and the newlines in them.
    counted: usize,
    newlines: u64,
    /// Newlines inside quoted values so far (their lines belong to one row).
    spanned: u64,
}

impl Lines {
    /// The row of the record the reader says starts at `offset` (skipping blank lines).
    fn row_at(&mut self, bytes: &[u8], offset: u64) -> u64 {
        let mut at = (offset as usize).min(bytes.len());
        while at < bytes.len() && matches!(bytes[at], b'\r' | b'\n') {
            at += 1;
        }
        if at > self.counted {
            self.newlines += bytes[self.counted..at]
                .iter()
                .filter(|b| **b == b'\n')
                .count() as u64;
            self.counted = at;
        }
        self.newlines + 1 - self.spanned
    }
}

fn read_csv(bytes: &[u8], rows: &mut Rows) -> Result<(), String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter(bytes))
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    // Rows are numbered as a spreadsheet shows the file: by line, a blank line counting as
    // an empty row, a quoted value spanning lines still one row. The reader's position may
    // point at blank lines it skipped, so the record's first line is found from its offset.
    let mut lines = Lines::default();
    for record in reader.byte_records() {
        let (row, cells) = match record {
            Err(e) => {
                let at = e.position().map_or(0, |p| p.byte());
                (lines.row_at(bytes, at), Err(format!("not CSV: {e}")))
            }
            Ok(r) => {
                let row = lines.row_at(bytes, r.position().map_or(0, |p| p.byte()));
                lines.spanned += r
                    .iter()
                    .map(|f| f.iter().filter(|b| **b == b'\n').count() as u64)
                    .sum::<u64>();
                let cells = r
                    .iter()
                    .map(|f| {
                        std::str::from_utf8(f)
                            .map(|s| Value::String(s.to_owned()))
                            .map_err(|_| {
                                "not UTF-8 text (save the file as \"CSV UTF-8\")".to_owned()
                            })
                    })
                    .collect();
                (row, cells)
            }
        };
        rows.row(row, cells)?;
        if rows.stopped {
            break;
        }
    }
    Ok(())
}

/// A cell of a sheet as a JSON value (numbers stay numbers; empty cells are `null`).
fn cell_value(v: &calamine::DataRef<'_>) -> Value {
    use calamine::DataRef;
    match v {
        DataRef::Int(i) => Value::from(*i),
        DataRef::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(*f as i64),
        DataRef::Float(f) => Value::from(*f),
        DataRef::String(s) => Value::from(s.clone()),
        DataRef::SharedString(s) => Value::from(*s),
        DataRef::Bool(b) => Value::from(*b),
        DataRef::DateTime(d) => Value::from(d.to_string()),
        DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => Value::from(s.clone()),
        DataRef::Error(e) => Value::from(e.to_string()),
        DataRef::Empty => Value::Null,
    }
}

fn read_xlsx(bytes: &[u8], rows: &mut Rows) -> Result<(), String> {
    check_inflated_size(bytes)?;
    let bad = |e: calamine::XlsxError| format!("not a readable XLSX file: {e}");
    let mut book: calamine::Xlsx<_> =
        calamine::open_workbook_from_rs(Cursor::new(bytes)).map_err(bad)?;
    let first = calamine::Reader::sheet_names(&book)
        .into_iter()
        .next()
        .ok_or("the workbook has no sheet")?;
    let mut cells = book.worksheet_cells_reader(&first).map_err(bad)?;
    // Cells come row by row, left to right; a row is complete when the next one starts.
    let mut current: Option<u32> = None;
    let mut values: Vec<Value> = Vec::new();
    while let Some(cell) = cells.next_cell().map_err(bad)? {
        let (r, c) = cell.get_position();
        if current != Some(r) {
            if let Some(done) = current {
                rows.row(u64::from(done) + 1, Ok(std::mem::take(&mut values)))?;
                if rows.stopped {
                    return Ok(());
                }
            }
            current = Some(r);
        }
        // Only the columns the header has matter; a cell far to the right is not kept.
        let width = rows.header.as_ref().map_or(256, |(_, names)| names.len());
        let c = c as usize;
        if c < width {
            if values.len() <= c {
                values.resize(c + 1, Value::Null);
            }
            values[c] = cell_value(cell.get_value());
        }
    }
    if let Some(done) = current {
        rows.row(u64::from(done) + 1, Ok(values))?;
    }
    Ok(())
}

/// Inflates every part of the archive once, counting, and refuses an archive that inflates
/// to more than `MAX_XLSX_INFLATED` (declared sizes are not trusted).
fn check_inflated_size(bytes: &[u8]) -> Result<(), String> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| format!("not a readable XLSX file: {e}"))?;
    let mut left = MAX_XLSX_INFLATED;
    let mut sink = vec![0u8; 64 * 1024];
    for i in 0..archive.len() {
        let mut part = archive
            .by_index(i)
            .map_err(|e| format!("not a readable XLSX file: {e}"))?;
        loop {
            let n = part
                .read(&mut sink)
                .map_err(|e| format!("not a readable XLSX file: {e}"))?;
            if n == 0 {
                break;
            }
            left = left.checked_sub(n as u64).ok_or_else(|| {
                format!("the spreadsheet unpacks to more than {MAX_XLSX_INFLATED} bytes")
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(bytes: &[u8]) -> Result<(Vec<CampaignRecipient>, Vec<BadRow>, u64), String> {
        let (mut recipients, mut bad, mut rows) = (Vec::new(), Vec::new(), 0);
        read(bytes, 0, &mut |b: Batch| {
            recipients.extend(b.recipients);
            bad.extend(b.bad);
            rows = b.rows;
            true
        })?;
        Ok((recipients, bad, rows))
    }

    #[test]
    fn csv_rows_become_recipients_and_bad_rows_are_numbered() {
        let csv = "\u{feff}Name,EMAIL,plan\nAda,ada@example.com,pro\n\nBob,not-an-address,free\n\"Kim, Min\",kim@example.com,\"multi\nline\"\n,,\nLee,,x\n";
        let (ok, bad, rows) = all(csv.as_bytes()).unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].row, 2);
        assert_eq!(ok[0].email, "ada@example.com");
        assert_eq!(ok[0].data["Name"], "Ada");
        assert_eq!(ok[0].data["plan"], "pro");
        assert_eq!(ok[1].data["Name"], "Kim, Min");
        assert_eq!(ok[1].data["plan"], "multi\nline");
        let bad_rows: Vec<u64> = bad.iter().map(|b| b.row).collect();
        // Rows as a spreadsheet numbers them: the blank line is row 3, the quoted newline
        // stays in row 5, and the empty row 6 is skipped.
        assert_eq!(bad_rows, [4, 7]);
        assert!(bad[0].error.starts_with("email"), "{}", bad[0].error);
        assert_eq!(bad[1].error, "no email address");
        assert_eq!(rows, 4);
    }

    #[test]
    fn csv_delimiters_and_encodings() {
        let (ok, _, _) = all(b"email;name\na@example.com;A\n").unwrap();
        assert_eq!(ok[0].data["name"], "A");
        let (ok, bad, _) =
            all(b"email\tname\na@example.com\tA\nb@example.com\t\xb0\xa1\n").unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!((bad[0].row, bad[0].error.contains("UTF-8")), (3, true));
        assert!(all(b"name,phone\nA,1\n").unwrap_err().contains("email"));
    }

    #[test]
    fn resuming_skips_rows_already_handled_and_stopping_stops() {
        let csv = "email\na@example.com\nb@example.com\nc@example.com\n";
        let mut seen = Vec::new();
        read(csv.as_bytes(), 3, &mut |b: Batch| {
            seen.extend(b.recipients.into_iter().map(|r| r.row));
            true
        })
        .unwrap();
        assert_eq!(seen, [4]);
        let mut calls = 0;
        let many: String = std::iter::once("email\n".to_owned())
            .chain((0..2500).map(|i| format!("u{i}@example.com\n")))
            .collect();
        read(many.as_bytes(), 0, &mut |_| {
            calls += 1;
            false
        })
        .unwrap();
        assert_eq!(calls, 1);
    }

    #[test]
    fn files_with_too_many_rows_are_refused() {
        let csv = "email\na@example.com\nb@example.com\nc@example.com\n";
        assert!(read_at_most(csv.as_bytes(), 0, 3, &mut |_| true).is_ok());
        let e = read_at_most(csv.as_bytes(), 0, 2, &mut |_| true).unwrap_err();
        assert_eq!(e, "more than 2 rows");
    }

    #[test]
    fn zip_bombs_and_garbage_are_refused() {
        // A zip whose one part inflates past the cap.
        let mut buf = Cursor::new(Vec::new());
        {
            let mut w = zip::ZipWriter::new(&mut buf);
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            w.start_file("xl/worksheets/sheet1.xml", opts).unwrap();
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..(MAX_XLSX_INFLATED >> 20) + 1 {
                std::io::Write::write_all(&mut w, &zeros).unwrap();
            }
            w.finish().unwrap();
        }
        let bytes = buf.into_inner();
        assert!(bytes.len() < 2 << 20, "{}", bytes.len());
        let e = all(&bytes).unwrap_err();
        assert!(e.contains("unpacks to more than"), "{e}");
        let e = all(b"PK\x03\x04garbage").unwrap_err();
        assert!(e.contains("not a readable XLSX"), "{e}");
    }
}
