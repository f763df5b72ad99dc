//! The text tables commands print (`apps`, `ps`, `releases`, `certs`,
//! `keys list`): each column as wide as its widest cell, three spaces
//! apart, as `docker ps` prints them; the last column is not padded.

use std::io::Write as _;

use tabwriter::TabWriter;

/// A table being filled, header first.
pub struct Table(TabWriter<Vec<u8>>);

impl Table {
    pub fn new(header: &[&str]) -> Self {
        let mut table = Self(TabWriter::new(Vec::new()).padding(3));
        table.row(header);
        table
    }

    /// One row. A tab or line break inside a cell shows as a space, so a
    /// cell never breaks the columns.
    pub fn row(&mut self, cells: &[&str]) {
        let cells: Vec<String> = cells.iter().map(|cell| cell.replace(['\t', '\n', '\r'], " ")).collect();
        // Writes to a Vec cannot fail.
        let _ = writeln!(self.0, "{}", cells.join("\t"));
    }

    pub fn into_text(self) -> String {
        let bytes = self.0.into_inner().unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::Table;

    #[test]
    fn columns_fit_their_widest_cell() {
        let mut table = Table::new(&["APP", "URL", "STATE"]);
        table.row(&["a-long-app-name", "http://a-long-app-name.apps.example.com/", "running"]);
        table.row(&["x", "-", "new\tapp"]);
        let expected = "\
APP               URL                                        STATE
a-long-app-name   http://a-long-app-name.apps.example.com/   running
x                 -                                          new app
";
        assert_eq!(table.into_text(), expected);
    }
}
