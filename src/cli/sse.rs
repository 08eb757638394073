//! Server-Sent Events as the WHATWG HTML standard defines the stream
//! ("9.2 Server-sent events", the parsing of an event stream): lines of
//! `field: value`, an event dispatched at each blank line, comments that
//! start with `:`. Only what `GET /v1/events/stream` sends is kept: the
//! event's `id` and its `data`.

use std::io::{BufRead, Read};

/// One event of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The `id` field, when the event had one.
    pub id: Option<String>,
    /// The `data` lines, joined with newlines.
    pub data: String,
}

/// The longest line a stream may send (an event of the API is far
/// shorter): past it the stream is not one the server sends.
pub const MAX_LINE: u64 = 16 << 20;

/// Reads events from an SSE stream.
pub struct Reader<R> {
    input: R,
    line: String,
}

impl<R: BufRead> Reader<R> {
    /// A reader of `input`.
    pub fn new(input: R) -> Reader<R> {
        Reader {
            input,
            line: String::new(),
        }
    }

    /// The next event, or `None` at the end of the stream (an event cut
    /// off by the end is dropped, as the standard says).
    ///
    /// # Errors
    /// The stream's read error; [`std::io::ErrorKind::InvalidData`] for a
    /// stream that is not text or has a line longer than [`MAX_LINE`].
    pub fn next_message(&mut self) -> std::io::Result<Option<Message>> {
        let mut id = None;
        let mut data: Option<String> = None;
        loop {
            self.line.clear();
            let n = (&mut self.input)
                .take(MAX_LINE + 1)
                .read_line(&mut self.line)?;
            if n == 0 {
                return Ok(None);
            }
            if n as u64 > MAX_LINE {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("a line longer than {MAX_LINE} bytes"),
                ));
            }
            let line = self.line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                match data.take() {
                    Some(data) => return Ok(Some(Message { id, data })),
                    None => {
                        id = None;
                        continue;
                    }
                }
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "id" if !value.contains('\0') => id = Some(value.to_owned()),
                "data" => match &mut data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => data = Some(value.to_owned()),
                },
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str) -> Vec<Message> {
        let mut r = Reader::new(text.as_bytes());
        let mut out = Vec::new();
        while let Some(m) = r.next_message().expect("read") {
            out.push(m);
        }
        out
    }

    #[test]
    fn events_comments_and_a_cut_tail() {
        let got = all(
            ": keep-alive\n\nid: 7\ndata: {\"id\":7}\n\nid:8\r\ndata:a\ndata: b\r\n\r\nid: 9\ndata: cut",
        );
        assert_eq!(
            got,
            vec![
                Message {
                    id: Some("7".into()),
                    data: "{\"id\":7}".into()
                },
                Message {
                    id: Some("8".into()),
                    data: "a\nb".into()
                },
            ]
        );
    }

    #[test]
    fn a_line_past_the_bound_or_not_text_is_invalid_data() {
        let long = vec![b'a'; MAX_LINE as usize + 10];
        let mut r = Reader::new(&long[..]);
        let e = r.next_message().expect_err("too long");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        let mut r = Reader::new(&b"data: \xff\xfe\n\n"[..]);
        let e = r.next_message().expect_err("not UTF-8");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    }

    #[test]
    fn an_event_without_data_is_not_dispatched() {
        assert!(all("id: 3\n\n").is_empty());
        assert_eq!(
            all("data\n\n"),
            vec![Message {
                id: None,
                data: String::new()
            }]
        );
    }
}
