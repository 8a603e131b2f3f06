//! An insertion-ordered option map with Python `OrderedDict` update semantics:
//! setting an existing key keeps its position and takes the new value. The
//! order of options decides the order of the worker's command line (spec §5.2).

/// One option as multi stores it: the name with its dashes (`-c`, `--logfile`)
/// and the value, `None` for a bare flag.
pub type Opt = (String, Option<String>);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptionMap(Vec<Opt>);

impl OptionMap {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    pub fn set(&mut self, key: &str, value: Option<String>) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.to_string(), value)),
        }
    }

    /// `Some(None)` is a flag given without a value.
    pub fn get(&self, key: &str) -> Option<&Option<String>> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn remove(&mut self, key: &str) -> Option<Option<String>> {
        let pos = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(pos).1)
    }

    /// Renames a key in place, keeping its position (for aliases).
    pub fn rename(&mut self, from: &str, to: &str) {
        if self.contains(to) {
            return;
        }
        if let Some(slot) = self.0.iter_mut().find(|(k, _)| k == from) {
            slot.0 = to.to_string();
        }
    }

    pub fn update(&mut self, other: &OptionMap) {
        for (k, v) in &other.0 {
            self.set(k, v.clone());
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Opt> {
        self.0.iter()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Namespaced option maps in order of first appearance.
#[derive(Debug, Clone, Default)]
pub struct Namespaces(Vec<(String, OptionMap)>);

impl Namespaces {
    pub fn entry(&mut self, ns: &str) -> &mut OptionMap {
        let pos = match self.0.iter().position(|(k, _)| k == ns) {
            Some(pos) => pos,
            None => {
                self.0.push((ns.to_string(), OptionMap::new()));
                self.0.len() - 1
            }
        };
        &mut self.0[pos].1
    }

    pub fn get(&self, ns: &str) -> Option<&OptionMap> {
        self.0.iter().find(|(k, _)| k == ns).map(|(_, v)| v)
    }

    pub fn contains(&self, ns: &str) -> bool {
        self.get(ns).is_some()
    }

    pub fn remove(&mut self, ns: &str) -> Option<OptionMap> {
        let pos = self.0.iter().position(|(k, _)| k == ns)?;
        Some(self.0.remove(pos).1)
    }

    /// A snapshot of the current names, so callers can mutate while walking.
    pub fn names(&self) -> Vec<String> {
        self.0.iter().map(|(k, _)| k.clone()).collect()
    }
}
