//! The full-text index: tantivy, in memory, built from the `documents` table and kept current
//! with it.
//!
//! Names and descriptions are tokenized with tantivy's English stemmer, so `kettles` finds
//! `kettle`. A query is the OR of its words (at most 8, see
//! [`service_kit::contract::search::terms`]), each word scored by BM25 in the name (weight 3, as
//! the monolith weighs a name match) and the description (weight 1); a category narrows the
//! result exactly. Query words are turned into index terms by the field's own tokenizer and
//! never parsed as query syntax, so no input can make a query fail or reach another field.
//!
//! One writer (the sync task) and any number of concurrent searches: searches read the last
//! committed state through the reader, which is reloaded after each commit.

use std::sync::Mutex;

use service_kit::contract::search::{Hit, round_score};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
    Value,
};
use tantivy::tokenizer::TokenStream;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term, doc};

/// The searchable part of a product, as stored in `documents`.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub category: String,
    pub price_cents: i64,
}

#[derive(Clone, Copy)]
struct Fields {
    id: Field,
    name: Field,
    description: Field,
    category: Field,
    price_cents: Field,
}

pub struct SearchIndex {
    index: Index,
    fields: Fields,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
}

/// Memory the writer may buffer before it flushes a segment.
const WRITER_HEAP: usize = 64 * 1024 * 1024;

impl SearchIndex {
    pub fn new() -> tantivy::Result<Self> {
        let mut schema = Schema::builder();
        let text = |stored: bool| {
            let options = TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer("en_stem")
                    .set_index_option(IndexRecordOption::WithFreqsAndPositions),
            );
            if stored {
                options.set_stored()
            } else {
                options
            }
        };
        let fields = Fields {
            id: schema.add_i64_field("id", INDEXED | STORED),
            name: schema.add_text_field("name", text(true)),
            description: schema.add_text_field("description", text(false)),
            category: schema.add_text_field("category", STRING | STORED),
            price_cents: schema.add_i64_field("price_cents", STORED),
        };
        let index = Index::create_in_ram(schema.build());
        let writer = index.writer(WRITER_HEAP)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            index,
            fields,
            reader,
            writer: Mutex::new(writer),
        })
    }

    /// Replaces `upserts` (by id) and removes `deletes`, then makes the result visible.
    /// Blocking: call it from the blocking pool.
    pub fn apply(&self, upserts: &[Document], deletes: &[i64]) -> tantivy::Result<()> {
        let f = self.fields;
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        for id in deletes {
            writer.delete_term(Term::from_field_i64(f.id, *id));
        }
        for d in upserts {
            writer.delete_term(Term::from_field_i64(f.id, d.id));
            writer.add_document(doc!(
                f.id => d.id,
                f.name => d.name.as_str(),
                f.description => d.description.as_str(),
                f.category => d.category.as_str(),
                f.price_cents => d.price_cents,
            ))?;
        }
        writer.commit()?;
        drop(writer);
        self.reader.reload()
    }

    /// Number of products in the index.
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The best `limit` hits for `terms` and the number of all matches. Blocking.
    pub fn search(
        &self,
        terms: &[String],
        category: Option<&str>,
        limit: usize,
    ) -> tantivy::Result<(i64, Vec<Hit>)> {
        let f = self.fields;
        let mut words: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for (field, weight) in [(f.name, 3.0), (f.description, 1.0)] {
            let mut analyzer = self.index.tokenizer_for_field(field)?;
            for term in terms {
                let mut stream = analyzer.token_stream(term);
                while stream.advance() {
                    let q = TermQuery::new(
                        Term::from_field_text(field, &stream.token().text),
                        IndexRecordOption::WithFreqs,
                    );
                    words.push((
                        Occur::Should,
                        Box::new(BoostQuery::new(Box::new(q), weight)),
                    ));
                }
            }
        }
        if words.is_empty() {
            return Ok((0, Vec::new()));
        }
        let mut query: Box<dyn Query> = Box::new(BooleanQuery::new(words));
        if let Some(c) = category {
            let exact = TermQuery::new(
                Term::from_field_text(f.category, c),
                IndexRecordOption::Basic,
            );
            query = Box::new(BooleanQuery::new(vec![
                (Occur::Must, query),
                (Occur::Must, Box::new(exact)),
            ]));
        }
        let searcher = self.reader.searcher();
        let (top, count) = searcher.search(&query, &(TopDocs::with_limit(limit), Count))?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let d: TantivyDocument = searcher.doc(address)?;
            let int = |field| d.get_first(field).and_then(|v| v.as_i64()).unwrap_or(0);
            let text = |field| {
                d.get_first(field)
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_owned()
            };
            hits.push(Hit {
                id: int(f.id),
                name: text(f.name),
                category: text(f.category),
                price_cents: int(f.price_cents),
                score: round_score(f64::from(score)),
            });
        }
        Ok((count as i64, hits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: i64, name: &str, description: &str, category: &str) -> Document {
        Document {
            id,
            name: name.into(),
            description: description.into(),
            category: category.into(),
            price_cents: id * 100,
        }
    }

    #[test]
    fn finds_ranks_filters_updates_and_deletes() {
        let index = SearchIndex::new().unwrap();
        index
            .apply(
                &[
                    doc(1, "Copper Kettle", "boils water", "kitchen"),
                    doc(2, "Tea Cup", "goes with any kettle", "kitchen"),
                    doc(3, "Kettlebell", "for the gym", "sports"),
                    doc(4, "Garden Hose", "waters plants", "garden"),
                ],
                &[],
            )
            .unwrap();
        let words = |q: &str| service_kit::contract::search::terms(q);
        let (total, hits) = index.search(&words("kettles"), None, 10).unwrap();
        assert_eq!(total, 2, "stemmed, whole words only: {hits:?}");
        assert_eq!(hits[0].id, 1, "a name match ranks first");
        assert!(hits[0].score > hits[1].score);
        let (total, _) = index.search(&words("kettle"), Some("sports"), 10).unwrap();
        assert_eq!(total, 0);
        let (total, hits) = index.search(&words("water plants"), None, 1).unwrap();
        assert_eq!((total, hits.len()), (2, 1), "total counts beyond the limit");
        // Query syntax is just words.
        let (total, _) = index
            .search(&words("name:kettle OR \"x"), None, 10)
            .unwrap();
        assert_eq!(total, 2);

        index
            .apply(&[doc(1, "Steel Pot", "boils water", "kitchen")], &[2])
            .unwrap();
        let (total, _) = index.search(&words("kettle"), None, 10).unwrap();
        assert_eq!(total, 0, "renamed and deleted");
        assert_eq!(index.len(), 3);
    }
}
