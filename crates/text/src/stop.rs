//! `StopStrings`: cutting generated text at the first stop string, without ever letting
//! out part of one.

/// Watches streamed text for stop strings. Text that could be the start of a stop string
/// is held back until it is clearly not one; once a stop string appears, the text before
/// it is the last let out.
#[derive(Clone, Debug, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    held: String,
    stopped: bool,
}

impl StopStrings {
    /// Watches for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> StopStrings {
        StopStrings {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            ..StopStrings::default()
        }
    }

    /// Adds a piece of text; returns what can be let out now.
    pub fn push(&mut self, piece: &str) -> String {
        if self.stopped {
            return String::new();
        }
        self.held.push_str(piece);
        // The earliest stop string wins.
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            self.stopped = true;
            let out = self.held[..at].to_string();
            self.held.clear();
            return out;
        }
        // Hold back the longest tail that is a proper prefix of some stop string.
        let keep = self
            .stops
            .iter()
            .map(|s| longest_tail_prefix(&self.held, s))
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        out
    }

    /// Whether a stop string was found.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// At the end of generation: what is still held back (it was not a stop string).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// The length of the longest suffix of `text` that is a proper prefix of `stop`, cut at a
/// character boundary.
fn longest_tail_prefix(text: &str, stop: &str) -> usize {
    let max = text.len().min(stop.len().saturating_sub(1));
    (1..=max)
        .rev()
        .find(|&n| text.is_char_boundary(text.len() - n) && stop.starts_with(&text[text.len() - n..]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut s = StopStrings::new(&stops);
        let mut out: Vec<String> = pieces.iter().map(|p| s.push(p)).collect();
        out.push(s.finish());
        (out, s.stopped())
    }

    #[test]
    fn a_stop_string_split_over_pieces_is_never_let_out() {
        let (out, stopped) = run(&["\n\nAnd"], &["light", ".\n", "\nA", "nd God", " said"]);
        assert!(stopped);
        assert_eq!(out.concat(), "light.");
        // Nothing of the stop string left before it was recognised.
        assert_eq!(out[1], ".");
    }

    #[test]
    fn a_false_start_is_let_out_once_it_is_clearly_not_a_stop() {
        let (out, stopped) = run(&["END"], &["the E", "ND", "x"]);
        assert!(stopped);
        assert_eq!(out.concat(), "the ");
        let (out, stopped) = run(&["END"], &["the E", "ast", " wind E"]);
        assert!(!stopped);
        assert_eq!(out[0], "the ");
        assert_eq!(out[1], "East");
        assert_eq!(out.concat(), "the East wind E");
    }

    #[test]
    fn the_earliest_of_several_stops_wins_and_multibyte_text_is_cut_on_boundaries() {
        let (out, _) = run(&["über", "b"], &["ab über c"]);
        assert_eq!(out.concat(), "a");
        let (out, stopped) = run(&["éx"], &["café", "é"]);
        assert!(!stopped);
        assert_eq!(out.concat(), "caféé");
    }
}
