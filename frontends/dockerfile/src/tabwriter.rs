//! Go's `text/tabwriter` as BuildKit's subrequests use it (space padding, no flags), so
//! the `result.txt` tables are aligned byte for byte like BuildKit's.

/// Aligns tab-terminated cells into columns: each column is as wide as its widest cell in
/// a block of consecutive lines that have that column, plus `padding` spaces.
pub fn format(text: &str, padding: usize) -> String {
    let mut out = String::new();
    // A line without a tab ends the table so far (Go flushes there).
    let mut pending: Vec<Vec<&str>> = Vec::new();
    let mut lines: Vec<&str> = text.split('\n').collect();
    let trailing = lines.pop().unwrap_or_default();
    for line in lines {
        let cells: Vec<&str> = line.split('\t').collect();
        let single = cells.len() == 1;
        pending.push(cells);
        if single {
            write_block(&pending, padding, &mut out, true);
            pending.clear();
        }
    }
    if !trailing.is_empty() {
        pending.push(trailing.split('\t').collect());
        write_block(&pending, padding, &mut out, false);
    } else {
        write_block(&pending, padding, &mut out, true);
    }
    out
}

fn width(s: &str) -> usize {
    s.chars().count()
}

/// Go's `Writer.format`: the width of column `col` is computed per block of consecutive
/// lines that have a tab-terminated cell in that column.
fn widths_for(lines: &[Vec<&str>], padding: usize) -> Vec<Vec<usize>> {
    let mut result: Vec<Vec<usize>> = vec![Vec::new(); lines.len()];
    fn go(
        lines: &[Vec<&str>],
        line0: usize,
        line1: usize,
        col: usize,
        widths: &mut Vec<usize>,
        padding: usize,
        result: &mut [Vec<usize>],
    ) {
        let mut line = line0;
        while line < line1 {
            if col + 1 >= lines[line].len() {
                result[line] = widths.clone();
                line += 1;
                continue;
            }
            let start = line;
            let mut w = 0;
            while line < line1 && col + 1 < lines[line].len() {
                w = w.max(width(lines[line][col]) + padding);
                line += 1;
            }
            widths.push(w);
            go(lines, start, line, col + 1, widths, padding, result);
            widths.pop();
        }
    }
    let mut widths = Vec::new();
    go(lines, 0, lines.len(), 0, &mut widths, padding, &mut result);
    result
}

fn write_block(lines: &[Vec<&str>], padding: usize, out: &mut String, newline_last: bool) {
    let widths = widths_for(lines, padding);
    for (i, cells) in lines.iter().enumerate() {
        for (j, c) in cells.iter().enumerate() {
            out.push_str(c);
            if let Some(w) = widths[i].get(j) {
                out.push_str(&" ".repeat(w.saturating_sub(width(c))));
            }
        }
        if i + 1 < lines.len() || newline_last {
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::format;

    #[test]
    fn aligns_like_go() {
        assert_eq!(
            format(
                "TARGET\tDESCRIPTION\nbuild\tcompiles it\nx (default)\t\n",
                1
            ),
            "TARGET      DESCRIPTION\nbuild       compiles it\nx (default) \n"
        );
        // A line without tabs closes the block; widths restart after it.
        assert_eq!(
            format("a\tb\nlonger\tc\n\nxy\tz\n", 3),
            "a        b\nlonger   c\n\nxy   z\n"
        );
    }
}
