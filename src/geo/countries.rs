//! ISO 3166-1 alpha-2 countries with an approximate centroid and their continent, for databases
//! that know a client's country but not its coordinates (country-level GeoIP data). The
//! centroids only have to be good enough to rank regions by distance; the table is sorted by
//! code so a lookup is a binary search.

use super::{Continent, Coordinates};

use Continent::{Africa as AF, Antarctica as AN, Asia as AS, Europe as EU, NorthAmerica as NA};
use Continent::{Oceania as OC, SouthAmerica as SA};

/// A country's centroid and continent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CountryInfo {
    pub centroid: Coordinates,
    pub continent: Continent,
}

/// Looks up an ISO 3166-1 alpha-2 code (upper case).
pub fn country_info(code: [u8; 2]) -> Option<CountryInfo> {
    COUNTRIES
        .binary_search_by(|(c, ..)| c.as_bytes().cmp(&code[..]))
        .ok()
        .map(|i| {
            let (_, lat, lon, continent) = COUNTRIES[i];
            CountryInfo {
                centroid: Coordinates { lat, lon },
                continent,
            }
        })
}

#[rustfmt::skip]
const COUNTRIES: &[(&str, f64, f64, Continent)] = &[
    ("AD", 42.5, 1.6, EU), ("AE", 23.4, 53.8, AS), ("AF", 33.9, 67.7, AS), ("AG", 17.1, -61.8, NA),
    ("AI", 18.2, -63.1, NA), ("AL", 41.2, 20.2, EU), ("AM", 40.1, 45.0, AS), ("AO", -11.2, 17.9, AF),
    ("AQ", -75.3, -0.1, AN), ("AR", -38.4, -63.6, SA), ("AS", -14.3, -170.1, OC), ("AT", 47.5, 14.6, EU),
    ("AU", -25.3, 133.8, OC), ("AW", 12.5, -70.0, NA), ("AX", 60.2, 20.0, EU), ("AZ", 40.1, 47.6, AS),
    ("BA", 43.9, 17.7, EU), ("BB", 13.2, -59.5, NA), ("BD", 23.7, 90.4, AS), ("BE", 50.5, 4.5, EU),
    ("BF", 12.2, -1.6, AF), ("BG", 42.7, 25.5, EU), ("BH", 25.9, 50.6, AS), ("BI", -3.4, 29.9, AF),
    ("BJ", 9.3, 2.3, AF), ("BL", 17.9, -62.8, NA), ("BM", 32.3, -64.8, NA), ("BN", 4.5, 114.7, AS),
    ("BO", -16.3, -63.6, SA), ("BQ", 12.2, -68.3, NA), ("BR", -14.2, -51.9, SA), ("BS", 25.0, -77.4, NA),
    ("BT", 27.5, 90.4, AS), ("BV", -54.4, 3.4, AN), ("BW", -22.3, 24.7, AF), ("BY", 53.7, 28.0, EU),
    ("BZ", 17.2, -88.5, NA), ("CA", 56.1, -106.3, NA), ("CC", -12.2, 96.9, AS), ("CD", -4.0, 21.8, AF),
    ("CF", 6.6, 20.9, AF), ("CG", -0.2, 15.8, AF), ("CH", 46.8, 8.2, EU), ("CI", 7.5, -5.5, AF),
    ("CK", -21.2, -159.8, OC), ("CL", -35.7, -71.5, SA), ("CM", 7.4, 12.4, AF), ("CN", 35.9, 104.2, AS),
    ("CO", 4.6, -74.3, SA), ("CR", 9.7, -83.8, NA), ("CU", 21.5, -77.8, NA), ("CV", 16.0, -24.0, AF),
    ("CW", 12.2, -69.0, NA), ("CX", -10.4, 105.7, AS), ("CY", 35.1, 33.4, AS), ("CZ", 49.8, 15.5, EU),
    ("DE", 51.2, 10.5, EU), ("DJ", 11.8, 42.6, AF), ("DK", 56.3, 9.5, EU), ("DM", 15.4, -61.4, NA),
    ("DO", 18.7, -70.2, NA), ("DZ", 28.0, 1.7, AF), ("EC", -1.8, -78.2, SA), ("EE", 58.6, 25.0, EU),
    ("EG", 26.8, 30.8, AF), ("EH", 24.2, -12.9, AF), ("ER", 15.2, 39.8, AF), ("ES", 40.5, -3.7, EU),
    ("ET", 9.1, 40.5, AF), ("FI", 61.9, 25.7, EU), ("FJ", -16.6, 179.4, OC), ("FK", -51.8, -59.5, SA),
    ("FM", 7.4, 150.6, OC), ("FO", 61.9, -6.9, EU), ("FR", 46.2, 2.2, EU), ("GA", -0.8, 11.6, AF),
    ("GB", 55.4, -3.4, EU), ("GD", 12.3, -61.6, NA), ("GE", 42.3, 43.4, AS), ("GF", 3.9, -53.1, SA),
    ("GG", 49.5, -2.6, EU), ("GH", 7.9, -1.0, AF), ("GI", 36.1, -5.3, EU), ("GL", 71.7, -42.6, NA),
    ("GM", 13.4, -15.3, AF), ("GN", 9.9, -9.7, AF), ("GP", 16.3, -61.6, NA), ("GQ", 1.7, 10.3, AF),
    ("GR", 39.1, 21.8, EU), ("GS", -54.4, -36.6, AN), ("GT", 15.8, -90.2, NA), ("GU", 13.4, 144.8, OC),
    ("GW", 11.8, -15.2, AF), ("GY", 4.9, -58.9, SA), ("HK", 22.4, 114.1, AS), ("HM", -53.1, 73.5, AN),
    ("HN", 15.2, -86.2, NA), ("HR", 45.1, 15.2, EU), ("HT", 19.0, -72.3, NA), ("HU", 47.2, 19.5, EU),
    ("ID", -0.8, 113.9, AS), ("IE", 53.4, -8.2, EU), ("IL", 31.0, 34.9, AS), ("IM", 54.2, -4.5, EU),
    ("IN", 20.6, 79.0, AS), ("IO", -6.3, 71.9, AS), ("IQ", 33.2, 43.7, AS), ("IR", 32.4, 53.7, AS),
    ("IS", 65.0, -19.0, EU), ("IT", 41.9, 12.6, EU), ("JE", 49.2, -2.1, EU), ("JM", 18.1, -77.3, NA),
    ("JO", 30.6, 36.2, AS), ("JP", 36.2, 138.3, AS), ("KE", 0.0, 37.9, AF), ("KG", 41.2, 74.8, AS),
    ("KH", 12.6, 105.0, AS), ("KI", -3.4, -168.7, OC), ("KM", -11.9, 43.9, AF), ("KN", 17.4, -62.8, NA),
    ("KP", 40.3, 127.5, AS), ("KR", 35.9, 127.8, AS), ("KW", 29.3, 47.5, AS), ("KY", 19.5, -80.6, NA),
    ("KZ", 48.0, 66.9, AS), ("LA", 19.9, 102.5, AS), ("LB", 33.9, 35.9, AS), ("LC", 13.9, -61.0, NA),
    ("LI", 47.2, 9.6, EU), ("LK", 7.9, 80.8, AS), ("LR", 6.4, -9.4, AF), ("LS", -29.6, 28.2, AF),
    ("LT", 55.2, 23.9, EU), ("LU", 49.8, 6.1, EU), ("LV", 56.9, 24.6, EU), ("LY", 26.3, 17.2, AF),
    ("MA", 31.8, -7.1, AF), ("MC", 43.7, 7.4, EU), ("MD", 47.4, 28.4, EU), ("ME", 42.7, 19.4, EU),
    ("MF", 18.1, -63.1, NA), ("MG", -18.8, 46.9, AF), ("MH", 7.1, 171.2, OC), ("MK", 41.6, 21.7, EU),
    ("ML", 17.6, -4.0, AF), ("MM", 21.9, 96.0, AS), ("MN", 46.9, 103.8, AS), ("MO", 22.2, 113.5, AS),
    ("MP", 17.3, 145.4, OC), ("MQ", 14.6, -61.0, NA), ("MR", 21.0, -10.9, AF), ("MS", 16.7, -62.2, NA),
    ("MT", 35.9, 14.4, EU), ("MU", -20.3, 57.6, AF), ("MV", 3.2, 73.2, AS), ("MW", -13.3, 34.3, AF),
    ("MX", 23.6, -102.6, NA), ("MY", 4.2, 102.0, AS), ("MZ", -18.7, 35.5, AF), ("NA", -23.0, 18.5, AF),
    ("NC", -20.9, 165.6, OC), ("NE", 17.6, 8.1, AF), ("NF", -29.0, 168.0, OC), ("NG", 9.1, 8.7, AF),
    ("NI", 12.9, -85.2, NA), ("NL", 52.1, 5.3, EU), ("NO", 60.5, 8.5, EU), ("NP", 28.4, 84.1, AS),
    ("NR", -0.5, 166.9, OC), ("NU", -19.1, -169.9, OC), ("NZ", -40.9, 174.9, OC), ("OM", 21.5, 55.9, AS),
    ("PA", 8.5, -80.8, NA), ("PE", -9.2, -75.0, SA), ("PF", -17.7, -149.4, OC), ("PG", -6.3, 143.9, OC),
    ("PH", 12.9, 121.8, AS), ("PK", 30.4, 69.3, AS), ("PL", 51.9, 19.1, EU), ("PM", 46.9, -56.3, NA),
    ("PN", -24.7, -127.4, OC), ("PR", 18.2, -66.6, NA), ("PS", 31.9, 35.2, AS), ("PT", 39.4, -8.2, EU),
    ("PW", 7.5, 134.6, OC), ("PY", -23.4, -58.4, SA), ("QA", 25.4, 51.2, AS), ("RE", -21.1, 55.5, AF),
    ("RO", 45.9, 25.0, EU), ("RS", 44.0, 21.0, EU), ("RU", 61.5, 105.3, EU), ("RW", -1.9, 29.9, AF),
    ("SA", 23.9, 45.1, AS), ("SB", -9.6, 160.2, OC), ("SC", -4.7, 55.5, AF), ("SD", 12.9, 30.2, AF),
    ("SE", 60.1, 18.6, EU), ("SG", 1.4, 103.8, AS), ("SH", -24.1, -10.0, AF), ("SI", 46.2, 15.0, EU),
    ("SJ", 77.6, 23.7, EU), ("SK", 48.7, 19.7, EU), ("SL", 8.5, -11.8, AF), ("SM", 43.9, 12.5, EU),
    ("SN", 14.5, -14.5, AF), ("SO", 5.2, 46.2, AF), ("SR", 3.9, -56.0, SA), ("SS", 6.9, 31.3, AF),
    ("ST", 0.2, 6.6, AF), ("SV", 13.8, -88.9, NA), ("SX", 18.0, -63.1, NA), ("SY", 34.8, 39.0, AS),
    ("SZ", -26.5, 31.5, AF), ("TC", 21.7, -71.8, NA), ("TD", 15.5, 18.7, AF), ("TF", -49.3, 69.3, AN),
    ("TG", 8.6, 0.8, AF), ("TH", 15.9, 101.0, AS), ("TJ", 38.9, 71.3, AS), ("TK", -8.9, -171.9, OC),
    ("TL", -8.9, 125.7, AS), ("TM", 38.97, 59.6, AS), ("TN", 33.9, 9.5, AF), ("TO", -21.2, -175.2, OC),
    ("TR", 39.0, 35.2, AS), ("TT", 10.7, -61.2, NA), ("TV", -7.1, 177.6, OC), ("TW", 23.7, 121.0, AS),
    ("TZ", -6.4, 34.9, AF), ("UA", 48.4, 31.2, EU), ("UG", 1.4, 32.3, AF), ("UM", 19.3, 166.6, OC),
    ("US", 37.1, -95.7, NA), ("UY", -32.5, -55.8, SA), ("UZ", 41.4, 64.6, AS), ("VA", 41.9, 12.5, EU),
    ("VC", 12.98, -61.3, NA), ("VE", 6.4, -66.6, SA), ("VG", 18.4, -64.6, NA), ("VI", 18.3, -64.9, NA),
    ("VN", 14.1, 108.3, AS), ("VU", -15.4, 166.9, OC), ("WF", -13.8, -177.2, OC), ("WS", -13.8, -172.1, OC),
    ("XK", 42.6, 20.9, EU), ("YE", 15.6, 48.5, AS), ("YT", -12.8, 45.2, AF), ("ZA", -30.6, 22.9, AF),
    ("ZM", -13.1, 27.8, AF), ("ZW", -19.0, 29.2, AF),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique_so_binary_search_works() {
        assert!(COUNTRIES.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(
            COUNTRIES.len() > 240,
            "every ISO 3166-1 country: {}",
            COUNTRIES.len()
        );
    }

    #[test]
    fn centroids_are_valid_coordinates() {
        for (code, lat, lon, _) in COUNTRIES {
            assert!(
                (-90.0..=90.0).contains(lat) && (-180.0..=180.0).contains(lon),
                "{code}"
            );
        }
    }

    #[test]
    fn known_countries_resolve() {
        let jp = country_info(*b"JP").expect("JP");
        assert_eq!(jp.continent, Continent::Asia);
        assert!((jp.centroid.lat - 36.2).abs() < 1.0);
        assert_eq!(
            country_info(*b"DE").map(|c| c.continent),
            Some(Continent::Europe)
        );
        assert_eq!(
            country_info(*b"BR").map(|c| c.continent),
            Some(Continent::SouthAmerica)
        );
        assert_eq!(country_info(*b"ZZ"), None);
    }
}
