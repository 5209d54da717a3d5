//! The common import line read without serde: one flat JSON object whose values are plain
//! strings (no escapes), integers, numbers, booleans or null. It reads what serde reads, field
//! for field, and gives up (`None`) on anything else (an envelope, an error list, an escape, a
//! repeated field, malformed JSON), which then goes to serde, as every line did before; serde
//! also words every rejection.

use std::borrow::Cow;

use super::ndjson::RawRun;

/// The fields read, in the order of the bits that mark them seen.
#[derive(Clone, Copy)]
enum Field {
    TaskRun,
    PipelineRun,
    Pipeline,
    Task,
    TaskType,
    Organization,
    State,
    IsSuccessful,
    Duration,
    ExecutedAt,
    Output,
    Errors,
    MetricValue,
    IsInitialTask,
    IsFinalTask,
    Message,
}

fn field(key: &str) -> Option<Field> {
    Some(match key {
        "task_run_uuid" => Field::TaskRun,
        "pipeline_run_uuid" | "workflow_run_uuid" => Field::PipelineRun,
        "pipeline_uuid" | "workflow_uuid" => Field::Pipeline,
        "task_uuid" => Field::Task,
        "task_type" => Field::TaskType,
        "organization_uuid" => Field::Organization,
        "state" => Field::State,
        "is_successful" => Field::IsSuccessful,
        "duration" => Field::Duration,
        "executed_at" | "executedAt" => Field::ExecutedAt,
        "output" => Field::Output,
        "errors" => Field::Errors,
        "metric_value" => Field::MetricValue,
        "is_initial_task" => Field::IsInitialTask,
        "is_final_task" => Field::IsFinalTask,
        "message" => Field::Message,
        _ => return None,
    })
}

/// A plain JSON value.
enum Value<'a> {
    Str(&'a str),
    /// A number as written.
    Number(&'a str),
    Bool(bool),
    Null,
}

/// The line's fields as serde would read them, or `None` when the line is not a plain flat
/// object (serde then reads it).
pub fn read(line: &str) -> Option<RawRun<'_>> {
    let mut input = Input { text: line, at: 0 };
    let mut raw = RawRun::default();
    let mut seen = 0u32;
    input.skip_space();
    input.expect(b'{')?;
    input.skip_space();
    if input.peek() == Some(b'}') {
        input.at += 1;
    } else {
        loop {
            input.skip_space();
            let key = input.string()?;
            input.skip_space();
            input.expect(b':')?;
            input.skip_space();
            let value = input.value()?;
            if let Some(field) = field(key) {
                let bit = 1 << field as u32;
                if seen & bit != 0 {
                    return None; // serde names the repeated field
                }
                seen |= bit;
                set(&mut raw, field, value)?;
            }
            input.skip_space();
            match input.next()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
    }
    input.skip_space();
    (input.at == line.len()).then_some(raw)
}

/// Sets a field from a value, as serde would; `None` where serde would refuse the value or
/// read it otherwise.
fn set<'a>(raw: &mut RawRun<'a>, field: Field, value: Value<'a>) -> Option<()> {
    let text = |value: Value<'a>| match value {
        Value::Str(text) => Some(Some(Cow::Borrowed(text))),
        Value::Null => Some(None),
        _ => None,
    };
    let flag = |value: Value<'a>| match value {
        Value::Bool(flag) => Some(Some(flag)),
        Value::Null => Some(None),
        _ => None,
    };
    match field {
        Field::TaskRun => raw.task_run_uuid = text(value)?,
        Field::PipelineRun => raw.pipeline_run_uuid = text(value)?,
        Field::Pipeline => raw.pipeline_uuid = text(value)?,
        Field::Task => raw.task_uuid = text(value)?,
        Field::TaskType => raw.task_type = text(value)?,
        Field::Organization => raw.organization_uuid = text(value)?,
        Field::State => raw.state = text(value)?,
        Field::ExecutedAt => raw.executed_at = text(value)?,
        Field::Output => raw.output = text(value)?,
        Field::IsSuccessful => raw.is_successful = flag(value)?,
        Field::IsInitialTask => raw.is_initial_task = flag(value)?,
        Field::IsFinalTask => raw.is_final_task = flag(value)?,
        Field::Duration => {
            raw.duration = match value {
                Value::Number(digits)
                    if digits.bytes().all(|b| b.is_ascii_digit())
                        && (digits == "0" || !digits.starts_with('0')) =>
                {
                    Some(digits.parse().ok()?)
                }
                Value::Null => None,
                _ => return None,
            }
        }
        Field::MetricValue => {
            raw.metric_value = match value {
                // serde's own number reading, so that every bit is the same.
                Value::Number(number) => Some(serde_json::from_str(number).ok()?),
                Value::Null => None,
                _ => return None,
            }
        }
        Field::Errors | Field::Message => match value {
            Value::Null => {}
            _ => return None,
        },
    }
    Some(())
}

struct Input<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Input<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// A string without escapes or control characters.
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        let length = self.bytes()[start..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        self.at = start + length;
        self.expect(b'"')?;
        // Quotes are ASCII: the slice ends on character boundaries.
        Some(&self.text[start..start + length])
    }

    /// A plain value; `None` for an object, an array or anything malformed.
    fn value(&mut self) -> Option<Value<'a>> {
        match self.peek()? {
            b'"' => self.string().map(Value::Str),
            b't' => self.word("true").map(|()| Value::Bool(true)),
            b'f' => self.word("false").map(|()| Value::Bool(false)),
            b'n' => self.word("null").map(|()| Value::Null),
            b'-' | b'0'..=b'9' => self.number().map(Value::Number),
            _ => None,
        }
    }

    fn word(&mut self, word: &str) -> Option<()> {
        let end = self.at + word.len();
        (self.text.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// A number as JSON writes it: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Option<&'a str> {
        let start = self.at;
        let digits = |input: &mut Input<'_>| {
            let from = input.at;
            while matches!(input.peek(), Some(b'0'..=b'9')) {
                input.at += 1;
            }
            input.at - from
        };
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let first = self.peek()?;
        let whole = digits(self);
        if whole == 0 || (first == b'0' && whole > 1) {
            return None;
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if digits(self) == 0 {
                return None;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if digits(self) == 0 {
                return None;
            }
        }
        Some(&self.text[start..self.at])
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::read;
    use crate::cli::import::ndjson::read_with_serde;
    use crate::workload::{Realistic, Sequential as Workload, to_json_line};

    /// Whatever the fast path reads, serde reads alike.
    fn agrees(line: &str) -> Result<(), TestCaseError> {
        if let Some(raw) = read(line) {
            prop_assert_eq!(Ok(raw), read_with_serde(line), "{}", line);
        }
        Ok(())
    }

    fn line(n: u64) -> String {
        to_json_line(&Workload::three_years(1_000_000).task_run(n))
    }

    proptest! {
        #[test]
        fn generated_lines_are_read_on_the_fast_path_as_serde_reads_them(n in 0u64..1_000_000) {
            let line = line(n);
            prop_assert!(read(&line).is_some(), "{}", line);
            agrees(&line)?;
        }

        #[test]
        fn realistic_lines_with_outputs_are_read_on_the_fast_path(skip in 0usize..5_000) {
            let run = Realistic::new(10_000).runs().nth(skip).expect("10,000 runs");
            let line = to_json_line(&run);
            if run.errors.is_empty() {
                prop_assert!(read(&line).is_some(), "{}", line);
            }
            agrees(&line)?;
        }

        #[test]
        fn damaged_lines_are_read_as_serde_reads_them_or_left_to_it(
            n in 0u64..1_000_000,
            edits in prop::collection::vec(
                (any::<prop::sample::Index>(), prop::sample::select(
                    b" \t\"\\,:{}[]0123456789.-+eEtrufalsn\x01\xc3".to_vec()), 0u8..3),
                1..4,
            ),
        ) {
            let mut bytes = line(n).into_bytes();
            for (at, byte, how) in edits {
                let i = at.index(bytes.len());
                match how {
                    0 => bytes[i] = byte,
                    1 => { bytes.remove(i); }
                    _ => bytes.insert(i, byte),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            if let Ok(line) = String::from_utf8(bytes) {
                agrees(&line)?;
            }
        }

        #[test]
        fn any_text_is_read_as_serde_reads_it_or_left_to_it(text in any::<String>()) {
            agrees(&text)?;
        }
    }

    #[test]
    fn plain_values_of_every_kind_are_read_as_serde_reads_them() {
        let keys = [
            "task_run_uuid",
            "workflow_uuid",
            "duration",
            "metric_value",
            "is_successful",
            "errors",
            "message",
            "unknown",
            "executedAt",
        ];
        let values = [
            "null",
            "true",
            "false",
            "0",
            "-0",
            "01",
            "7",
            "1.5",
            "-2.25e-3",
            "1e999",
            "1E+2",
            "18446744073709551615",
            "18446744073709551616",
            "\"\"",
            "\"é\"",
            "[]",
            "{}",
            "\"a\\\"b\"",
            "-",
            "1.",
            ".5",
            "tru",
            "\"\u{1}\"",
        ];
        for key in keys {
            for value in values {
                agrees(&format!("{{\"{key}\": {value}}}")).unwrap();
                agrees(&format!(" {{ \"{key}\" :{value} , \"{key}\":{value}}} ")).unwrap();
                agrees(&format!("{{\"{key}\":{value}}} x")).unwrap();
            }
        }
    }
}
