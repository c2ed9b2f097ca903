//! LinMaxMatch (Song et al., "Fast WordPiece Tokenization", EMNLP 2021): BERT's greedy
//! longest-match-first in time linear in the word, over a trie with failure links.
//!
//! Two tries share one node table: the *prefix* trie holds every vocabulary string as it is
//! (what the greedy match looks up at the start of a word), the *suffix* trie holds the
//! continuation pieces without their `##` (what it looks up afterwards). For a node `v`
//! that cannot be extended by the next byte, `pops(v)` are the tokens the greedy match would
//! emit for `str(v)` and `fail(v)` the node it would then stand on, both precomputed
//! breadth-first as in the paper's Algorithm 2. Matching walks each byte once, and each failure
//! transition emits at least one token, so the work is linear. Bytes, not characters: every
//! token is whole characters, so a byte-level longest match is the character-level one.

use rustc_hash::FxHashMap;

const NONE: u32 = u32::MAX;
const ROOT: u32 = 0;
const SUFFIX_ROOT: u32 = 1;

/// The precomputed automaton for one vocabulary.
#[derive(Clone, Debug)]
pub(crate) struct LinMaxMatch {
    /// Transitions out of the two roots, dense: most lookups start there.
    root: Box<[u32; 256]>,
    suffix_root: Box<[u32; 256]>,
    /// Other transitions, `(node << 8 | byte) → child`.
    edges: FxHashMap<u64, u32>,
    fail: Vec<u32>,
    /// `pops[v]` is `pop_list[pops[v].0 .. pops[v].1]`.
    pops: Vec<(u32, u32)>,
    /// (token id, bytes of the word it covers).
    pop_list: Vec<(u32, u32)>,
}

/// One token of a word: id and normalized byte range.
pub(crate) type Piece = (u32, u32, u32);

impl LinMaxMatch {
    /// Builds the automaton. `vocab` yields (string, id); `prefix` marks continuation pieces.
    pub(crate) fn new<'a>(vocab: impl Iterator<Item = (&'a str, u32)>, prefix: &str) -> Self {
        let mut b = Builder {
            children: vec![Vec::new(), Vec::new()],
            token: vec![NONE, NONE],
            depth: vec![0, 0],
        };
        for (s, id) in vocab {
            b.insert(ROOT, s.as_bytes(), id);
            if let Some(rest) = s.strip_prefix(prefix).filter(|r| !r.is_empty()) {
                b.insert(SUFFIX_ROOT, rest.as_bytes(), id);
            }
        }
        b.finish()
    }

    #[inline]
    fn child(&self, node: u32, byte: u8) -> u32 {
        match node {
            ROOT => self.root[byte as usize],
            SUFFIX_ROOT => self.suffix_root[byte as usize],
            _ => *self
                .edges
                .get(&((node as u64) << 8 | byte as u64))
                .unwrap_or(&NONE),
        }
    }

    /// Appends the pieces of `word` to `out`; `false` (and `out` unchanged) when the greedy
    /// match gets stuck, i.e. the word is unknown.
    pub(crate) fn tokenize(&self, word: &[u8], out: &mut Vec<Piece>) -> bool {
        let keep = out.len();
        let mut node = ROOT;
        let mut start = 0u32;
        let mut i = 0;
        while i < word.len() {
            crate::ops::add(1);
            let next = self.child(node, word[i]);
            if next != NONE {
                node = next;
                i += 1;
                continue;
            }
            if !self.pop(&mut node, &mut start, out) {
                out.truncate(keep);
                return false;
            }
        }
        while node != SUFFIX_ROOT {
            if !self.pop(&mut node, &mut start, out) {
                out.truncate(keep);
                return false;
            }
        }
        true
    }

    #[inline]
    fn pop(&self, node: &mut u32, start: &mut u32, out: &mut Vec<Piece>) -> bool {
        let v = *node as usize;
        if self.fail[v] == NONE {
            return false;
        }
        let (a, b) = self.pops[v];
        crate::ops::add(1 + (b - a) as usize);
        for &(id, len) in &self.pop_list[a as usize..b as usize] {
            out.push((id, *start, *start + len));
            *start += len;
        }
        *node = self.fail[v];
        true
    }
}

struct Builder {
    /// Sorted (byte, child) per node.
    children: Vec<Vec<(u8, u32)>>,
    /// The token id a node spells (in its own trie), or NONE.
    token: Vec<u32>,
    depth: Vec<u32>,
}

impl Builder {
    fn insert(&mut self, root: u32, bytes: &[u8], id: u32) {
        let mut node = root;
        for &byte in bytes {
            let kids = &self.children[node as usize];
            node = match kids.binary_search_by_key(&byte, |k| k.0) {
                Ok(i) => kids[i].1,
                Err(i) => {
                    let new = self.token.len() as u32;
                    let depth = self.depth[node as usize] + 1;
                    self.children[node as usize].insert(i, (byte, new));
                    self.children.push(Vec::new());
                    self.token.push(NONE);
                    self.depth.push(depth);
                    new
                }
            };
        }
        // A vocabulary read from vocab.txt may repeat a string; Hugging Face keeps the last id.
        self.token[node as usize] = id;
    }

    fn child(&self, node: u32, byte: u8) -> u32 {
        let kids = &self.children[node as usize];
        kids.binary_search_by_key(&byte, |k| k.0)
            .map_or(NONE, |i| kids[i].1)
    }

    fn finish(self) -> LinMaxMatch {
        let n = self.token.len();
        let mut fail = vec![NONE; n];
        let mut pops = vec![(0u32, 0u32); n];
        let mut pop_list: Vec<(u32, u32)> = Vec::new();
        // Breadth-first over both tries at once: fail links only point to shallower nodes.
        let mut queue = std::collections::VecDeque::from([ROOT, SUFFIX_ROOT]);
        let mut scratch = Vec::new();
        while let Some(u) = queue.pop_front() {
            for &(byte, v) in &self.children[u as usize] {
                queue.push_back(v);
                let vi = v as usize;
                if self.token[vi] != NONE {
                    let start = pop_list.len() as u32;
                    pop_list.push((self.token[vi], self.depth[vi]));
                    pops[vi] = (start, start + 1);
                    fail[vi] = SUFFIX_ROOT;
                    continue;
                }
                scratch.clear();
                let (a, b) = pops[u as usize];
                scratch.extend_from_slice(&pop_list[a as usize..b as usize]);
                let mut z = fail[u as usize];
                while z != NONE && self.child(z, byte) == NONE {
                    let (a, b) = pops[z as usize];
                    scratch.extend_from_slice(&pop_list[a as usize..b as usize]);
                    z = fail[z as usize];
                }
                if z != NONE {
                    fail[vi] = self.child(z, byte);
                    let start = pop_list.len() as u32;
                    pop_list.extend_from_slice(&scratch);
                    pops[vi] = (start, pop_list.len() as u32);
                }
            }
        }
        let dense = |root: u32| {
            let mut table = Box::new([NONE; 256]);
            for &(byte, child) in &self.children[root as usize] {
                table[byte as usize] = child;
            }
            table
        };
        let mut edges = FxHashMap::default();
        for (node, kids) in self.children.iter().enumerate().skip(2) {
            for &(byte, child) in kids {
                edges.insert((node as u64) << 8 | byte as u64, child);
            }
        }
        LinMaxMatch {
            root: dense(ROOT),
            suffix_root: dense(SUFFIX_ROOT),
            edges,
            fail,
            pops,
            pop_list,
        }
    }
}

/// BERT's own greedy longest-match-first (quadratic), the reference LinMaxMatch is tested
/// against: at each position the longest vocabulary string, `prefix`ed after the first.
pub(crate) fn greedy(
    word: &str,
    lookup: impl Fn(&str) -> Option<u32>,
    prefix: &str,
) -> Option<Vec<Piece>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut candidate = String::new();
    while start < word.len() {
        let mut end = word.len();
        let mut found = None;
        while start < end {
            candidate.clear();
            if start > 0 {
                candidate.push_str(prefix);
            }
            candidate.push_str(&word[start..end]);
            if let Some(id) = lookup(&candidate) {
                found = Some(id);
                break;
            }
            end -= word[..end].chars().next_back().map_or(1, char::len_utf8);
        }
        out.push((found?, start as u32, end as u32));
        start = end;
    }
    Some(out)
}
