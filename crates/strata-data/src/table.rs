//! A CSV table as a dataset (`--dataset csv --data-path FILE`): a header row, one sample per
//! row, a label column (`data.label_column`, default `label`) and numeric feature columns;
//! optionally a group column (`data.group_column`: the sample's owner, a hospital, a writer,
//! a device) that is not a feature and that the `natural` split keeps together.
//!
//! Labels that are all whole numbers from 0 are the classes; otherwise each distinct label
//! text is a class, numbered in sorted order. Every row is training data before the split
//! (a table has no official test set). Quoted fields follow RFC 4180.

use std::collections::BTreeMap;
use std::path::Path;

use crate::{DataError, DataShape, Dataset, Features};

/// The label column when the config names none.
pub const DEFAULT_LABEL_COLUMN: &str = "label";

/// Loads the table at `path`.
pub fn load(path: &Path, label_column: Option<&str>, group_column: Option<&str>) -> Result<Dataset, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DataError::Missing { path: path.to_path_buf(), hint: String::new() },
        std::io::ErrorKind::InvalidData => {
            DataError::Corrupt { path: path.to_path_buf(), reason: "not UTF-8 text".into() }
        }
        _ => DataError::Io { path: path.to_path_buf(), source: e },
    })?;
    let corrupt = |reason: String| DataError::Corrupt { path: path.to_path_buf(), reason };
    let mut rows = parse_csv(&text).map_err(corrupt)?.into_iter();
    let header = rows.next().ok_or_else(|| corrupt("the file is empty: it needs a header row".into()))?;
    let label_name = label_column.unwrap_or(DEFAULT_LABEL_COLUMN);
    let column = |name: &str, key: &str| {
        header
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| corrupt(format!("no column `{name}` ({key}); the columns are {}", header.join(", "))))
    };
    let label_at = column(label_name, "data.label_column")?;
    let group_at = group_column.map(|g| column(g, "data.group_column")).transpose()?;
    let features_at: Vec<usize> = (0..header.len()).filter(|&i| i != label_at && Some(i) != group_at).collect();
    if features_at.is_empty() {
        return Err(corrupt("no feature column besides the label".into()));
    }
    let (mut features, mut label_texts, mut group_texts) = (Vec::new(), Vec::new(), Vec::new());
    for (r, row) in rows.enumerate() {
        let line = r + 2;
        if row.len() == 1 && row[0].trim().is_empty() {
            continue;
        }
        if row.len() != header.len() {
            return Err(corrupt(format!("row {line} has {} fields, the header {}", row.len(), header.len())));
        }
        for &c in &features_at {
            let cell = row[c].trim();
            let value: f32 = cell.parse().ok().filter(|v: &f32| v.is_finite()).ok_or_else(|| {
                corrupt(format!("row {line}, column `{}`: `{}` is not a finite number", header[c], clip(cell)))
            })?;
            features.push(value);
        }
        label_texts.push(row[label_at].trim().to_string());
        if let Some(g) = group_at {
            group_texts.push(row[g].trim().to_string());
        }
    }
    if label_texts.is_empty() {
        return Err(corrupt("no rows after the header".into()));
    }
    let (labels, num_classes) = classes(&label_texts);
    if num_classes < 2 {
        return Err(corrupt(format!("column `{label_name}` names fewer than 2 classes")));
    }
    let owners = group_at.map(|_| classes(&group_texts).0);
    Ok(Dataset {
        name: "csv".into(),
        features: Features::Floats(features),
        official_train_len: labels.len(),
        labels,
        shape: DataShape { sample_shape: vec![features_at.len()], num_classes },
        owners,
    })
}

/// Class numbers: the labels themselves when all are whole numbers from 0, else the sorted
/// distinct texts' ranks; and how many classes.
fn classes(texts: &[String]) -> (Vec<u32>, usize) {
    let numbers: Option<Vec<u32>> = texts.iter().map(|t| t.parse().ok()).collect();
    if let Some(numbers) = numbers {
        let count = numbers.iter().max().map_or(0, |&m| m as usize + 1);
        return (numbers, count);
    }
    let ranks: BTreeMap<&str, u32> =
        texts.iter().map(String::as_str).collect::<std::collections::BTreeSet<_>>().into_iter().zip(0..).collect();
    (texts.iter().map(|t| ranks[t.as_str()]).collect(), ranks.len())
}

fn clip(text: &str) -> String {
    text.chars().take(40).collect()
}

/// RFC 4180 fields: commas separate, double quotes enclose (`""` is a quote), CRLF or LF ends
/// a record outside quotes.
fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, String> {
    let (mut rows, mut row, mut field) = (Vec::new(), Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut line = 1;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => {
                line += usize::from(c == '\n');
                field.push(c);
            }
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
                line += 1;
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err(format!("a quoted field opened by line {line} never closes"));
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("table.csv");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn a_table_loads_with_its_label_features_and_owners() {
        let (_dir, path) =
            write("age,site,\"bp, mmHg\",outcome\r\n61,north,120.5,yes\r\n45,south,\"99\",no\r\n70,north,140,yes\r\n");
        let data = load(&path, Some("outcome"), Some("site")).unwrap();
        assert_eq!(data.shape, DataShape { sample_shape: vec![2], num_classes: 2 });
        assert_eq!((data.labels.clone(), data.official_train_len), (vec![1, 0, 1], 3));
        assert!(matches!(&data.features, Features::Floats(v) if v[..] == [61.0, 120.5, 45.0, 99.0, 70.0, 140.0]));
        assert_eq!(data.owners, Some(vec![0, 1, 0]));
        let (_kept, numeric) = write("x,label\n0.5,2\n1.5,0\n");
        let data = load(&numeric, None, None).unwrap();
        assert_eq!((data.labels, data.shape.num_classes, data.owners), (vec![2, 0], 3, None));
    }

    #[test]
    fn bad_tables_name_the_row_and_column() {
        let expect = |text: &str, label: Option<&str>, group: Option<&str>, words: &[&str]| {
            let (_dir, path) = write(text);
            let err = load(&path, label, group).unwrap_err().to_string();
            for w in words {
                assert!(err.contains(w), "`{w}` missing from: {err}");
            }
        };
        expect("a,b\n1,2\n", None, None, &["table.csv", "no column `label`", "a, b"]);
        expect("a,label\n1,0\n2,1\n", None, Some("site"), &["no column `site`", "data.group_column"]);
        expect("a,label\n1,0\nx7,1\n", None, None, &["row 3, column `a`", "`x7` is not a finite number"]);
        expect("a,label\n1,0\n2\n", None, None, &["row 3 has 1 fields"]);
        expect("a,label\n1,0\n\"2,1\n", None, None, &["never closes"]);
        expect("a,label\n1,0\n2,0\n", None, None, &["fewer than 2 classes"]);
        expect("", None, None, &["empty"]);
        expect("label\n1\n0\n", None, None, &["no feature column"]);
        expect("a,label\nNaN,0\n1,1\n", None, None, &["`NaN` is not a finite number"]);
        let err = load(Path::new("/nonexistent/t.csv"), None, None).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/t.csv is missing"), "{err}");
    }
}
