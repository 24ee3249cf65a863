//! Deterministic demo data: a catalog that looks like a real store's.
//!
//! The same `(count, seed)` always produces the same products, so the demo, the tests and the
//! benchmarks talk about the same catalog. Prices follow each category's range, sales are
//! long-tailed (a few bestsellers, many slow movers), some products are out of stock.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use service_kit::db::Database;
use sqlx::{Any, QueryBuilder};

struct CategorySpec {
    name: &'static str,
    nouns: &'static [&'static str],
    /// Price range in cents.
    price: (i64, i64),
}

const CATEGORIES: &[CategorySpec] = &[
    CategorySpec {
        name: "electronics",
        nouns: &[
            "Headphones",
            "Bluetooth Speaker",
            "USB-C Charger",
            "Power Bank",
            "Smartwatch",
            "Webcam",
            "Mechanical Keyboard",
            "Wireless Mouse",
        ],
        price: (999, 49_999),
    },
    CategorySpec {
        name: "books",
        nouns: &[
            "Cookbook",
            "Novel",
            "Field Guide",
            "Atlas",
            "Poetry Collection",
            "Biography",
            "Travel Guide",
        ],
        price: (499, 5_999),
    },
    CategorySpec {
        name: "kitchen",
        nouns: &[
            "Chef's Knife",
            "Cast Iron Skillet",
            "French Press",
            "Cutting Board",
            "Stand Mixer",
            "Espresso Cups",
            "Dutch Oven",
        ],
        price: (799, 39_999),
    },
    CategorySpec {
        name: "garden",
        nouns: &[
            "Pruning Shears",
            "Watering Can",
            "Raised Bed",
            "Seed Starter Kit",
            "Garden Hose",
            "Compost Bin",
        ],
        price: (599, 19_999),
    },
    CategorySpec {
        name: "toys",
        nouns: &[
            "Building Blocks",
            "Puzzle",
            "Plush Bear",
            "Board Game",
            "Kite",
            "Wooden Train Set",
        ],
        price: (499, 14_999),
    },
    CategorySpec {
        name: "sports",
        nouns: &[
            "Yoga Mat",
            "Running Shoes",
            "Water Bottle",
            "Resistance Bands",
            "Tennis Racket",
            "Cycling Gloves",
        ],
        price: (899, 24_999),
    },
    CategorySpec {
        name: "clothing",
        nouns: &[
            "Rain Jacket",
            "Wool Socks",
            "Linen Shirt",
            "Denim Jeans",
            "Knit Beanie",
            "Hoodie",
        ],
        price: (999, 19_999),
    },
    CategorySpec {
        name: "beauty",
        nouns: &[
            "Face Serum",
            "Lip Balm",
            "Shampoo Bar",
            "Hand Cream",
            "Sunscreen",
            "Beard Oil",
        ],
        price: (399, 7_999),
    },
    CategorySpec {
        name: "office",
        nouns: &[
            "Notebook",
            "Fountain Pen",
            "Desk Lamp",
            "Monitor Stand",
            "Stapler",
            "Desk Organizer",
        ],
        price: (299, 12_999),
    },
    CategorySpec {
        name: "pets",
        nouns: &[
            "Dog Leash",
            "Cat Scratcher",
            "Pet Bed",
            "Chew Toy",
            "Food Bowl",
            "Aquarium Filter",
        ],
        price: (399, 9_999),
    },
    CategorySpec {
        name: "home",
        nouns: &[
            "Throw Blanket",
            "Scented Candle",
            "Table Lamp",
            "Wall Clock",
            "Storage Basket",
            "Picture Frame",
        ],
        price: (599, 29_999),
    },
    CategorySpec {
        name: "grocery",
        nouns: &[
            "Coffee Beans",
            "Green Tea",
            "Olive Oil",
            "Dark Chocolate",
            "Honey",
            "Granola",
        ],
        price: (199, 3_999),
    },
];

const ADJECTIVES: &[&str] = &[
    "Classic",
    "Compact",
    "Deluxe",
    "Eco",
    "Ergonomic",
    "Everyday",
    "Premium",
    "Portable",
    "Rustic",
    "Smart",
    "Sturdy",
    "Vintage",
    "Lightweight",
    "Handmade",
    "Organic",
    "Modern",
    "Pro",
    "Travel",
];
const COLOURS: &[&str] = &[
    "Black", "White", "Navy", "Olive", "Sand", "Red", "Grey", "Teal", "Walnut", "Copper",
];
const QUALITIES: &[&str] = &[
    "built to last",
    "easy to clean",
    "made from recycled materials",
    "loved by our customers",
    "backed by a two-year warranty",
    "designed in our studio",
    "perfect as a gift",
    "tested by our team",
    "shipped plastic-free",
    "ideal for small spaces",
];

/// 2024-01-01T00:00:00Z: seeded products are created after this instant, one every 37 minutes.
const EPOCH_MS: i64 = 1_704_067_200_000;

/// One generated product (the columns of an INSERT).
struct Generated {
    sku: String,
    name: String,
    description: String,
    category: &'static str,
    price_cents: i64,
    stock: i64,
    sales: i64,
    created_at: i64,
}

fn generate(rng: &mut ChaCha8Rng, index: u32) -> Generated {
    let cat = &CATEGORIES[rng.gen_range(0..CATEGORIES.len())];
    let noun = cat.nouns[rng.gen_range(0..cat.nouns.len())];
    let adjective = ADJECTIVES[rng.gen_range(0..ADJECTIVES.len())];
    let colour = COLOURS[rng.gen_range(0..COLOURS.len())];
    let quality = QUALITIES[rng.gen_range(0..QUALITIES.len())];
    let model = rng.gen_range(100..1000);
    // Prices cluster at the low end of the range and end in 9, as shop prices do.
    let span = (cat.price.1 - cat.price.0) as f64;
    let price = cat.price.0 + (span * rng.r#gen::<f64>().powi(2)) as i64;
    let price_cents = price / 100 * 100 + 99;
    // Long tail: most products sell little, a few sell a lot.
    let sales = (rng.r#gen::<f64>().powi(6) * 5_000.0) as i64;
    let stock = if rng.gen_ratio(1, 20) {
        0
    } else {
        rng.gen_range(1..500)
    };
    let created_at = EPOCH_MS + i64::from(index) * 37 * 60 * 1000;
    Generated {
        sku: format!("{}-{:06}", &cat.name[..3].to_uppercase(), index + 1),
        name: format!("{adjective} {noun} {model}"),
        description: format!(
            "{adjective} {} in {}, {quality}. Model {model}, colour {colour}.",
            noun.to_lowercase(),
            colour.to_lowercase()
        ),
        category: cat.name,
        price_cents,
        stock,
        sales,
        created_at,
    }
}

/// Inserts `count` deterministic products when the catalog is empty; returns how many were
/// inserted (0 when products exist already: seeding never mixes with real data).
pub async fn seed_products(db: &Database, count: u32, seed: u64) -> anyhow::Result<u64> {
    let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products")
        .fetch_one(&db.pool)
        .await?;
    if existing > 0 {
        tracing::info!(existing, "catalog is not empty; not seeding");
        return Ok(0);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut tx = db.pool.begin().await?;
    const BATCH: u32 = 500;
    let mut index = 0;
    while index < count {
        let n = BATCH.min(count - index);
        let batch: Vec<Generated> = (index..index + n).map(|i| generate(&mut rng, i)).collect();
        let mut qb = QueryBuilder::<Any>::new(
            "INSERT INTO products (sku, name, description, category, price_cents, currency, stock, sales, created_at, updated_at, edited_at) ",
        );
        qb.push_values(batch, |mut b, g| {
            b.push_bind(g.sku)
                .push_bind(g.name)
                .push_bind(g.description)
                .push_bind(g.category)
                .push_bind(g.price_cents)
                .push_bind("USD")
                .push_bind(g.stock)
                .push_bind(g.sales)
                .push_bind(g.created_at)
                .push_bind(g.created_at)
                .push_bind(g.created_at);
        });
        qb.build().execute(&mut *tx).await?;
        index += n;
    }
    tx.commit().await?;
    Ok(u64::from(count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_catalog() {
        let mut a = ChaCha8Rng::seed_from_u64(7);
        let mut b = ChaCha8Rng::seed_from_u64(7);
        for i in 0..100 {
            let (x, y) = (generate(&mut a, i), generate(&mut b, i));
            assert_eq!(
                (x.sku, x.name, x.price_cents, x.sales),
                (y.sku, y.name, y.price_cents, y.sales)
            );
            let cat = CATEGORIES.iter().find(|c| c.name == x.category).unwrap();
            assert!(x.price_cents >= cat.price.0 && x.price_cents <= cat.price.1 + 99);
            assert!(x.price_cents % 100 == 99);
        }
    }
}
