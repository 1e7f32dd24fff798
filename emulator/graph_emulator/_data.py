"""Static reference data for the generated tenant.

Kept apart from the generator so the generation logic stays readable and so the
lists can be tuned (more names, another office) without touching any code.
Everything here is a tuple: the generator indexes into these with a seeded rng,
so their order is part of what makes a tenant reproducible.
"""

from __future__ import annotations

from typing import NamedTuple

# Display forms; addresses are derived by folding to ASCII (José -> jose, O'Connor -> oconnor),
# so a few names with diacritics and punctuation exercise that path in the sync.
FIRST_NAMES: tuple[str, ...] = (
    "James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda",
    "William", "Elizabeth", "David", "Barbara", "Richard", "Susan", "Joseph", "Jessica",
    "Thomas", "Sarah", "Charles", "Karen", "Daniel", "Nancy", "Matthew", "Lisa",
    "Anthony", "Betty", "Mark", "Margaret", "Paul", "Sandra", "Steven", "Ashley",
    "Andrew", "Emily", "Kenneth", "Donna", "Joshua", "Michelle", "Kevin", "Carol",
    "Brian", "Amanda", "Priya", "Wei", "Fatima", "Mateo", "Sofia", "Liam",
    "Aisha", "Noah", "Yuki", "Oliver", "Chloé", "Lukas", "Ingrid", "José",
)  # fmt: skip

LAST_NAMES: tuple[str, ...] = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
    "Rodriguez", "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas",
    "Taylor", "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White",
    "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young",
    "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores",
    "Patel", "Chen", "Kim", "Murphy", "O'Connor", "Schmidt", "Müller", "Rossi",
    "Tanaka", "Singh", "Kowalski", "Andersen", "Dubois", "Silva", "Okafor", "Núñez",
)  # fmt: skip

EXECUTIVE = "Executive"

DEPARTMENTS: tuple[str, ...] = (
    EXECUTIVE,
    "Sales",
    "Marketing",
    "Engineering",
    "Product",
    "Customer Support",
    "Finance",
    "Human Resources",
    "Legal",
    "IT",
    "Operations",
    "Research & Development",
    "Procurement",
    "Facilities",
)

# Titles for people who manage nobody, by department.
DEPARTMENT_TITLES: dict[str, tuple[str, ...]] = {
    EXECUTIVE: ("Chief of Staff", "Executive Assistant"),
    "Sales": ("Account Executive", "Sales Development Representative", "Sales Engineer"),
    "Marketing": ("Marketing Specialist", "Content Strategist", "Brand Manager"),
    "Engineering": (
        "Software Engineer",
        "Senior Software Engineer",
        "Principal Engineer",
        "Site Reliability Engineer",
        "QA Engineer",
    ),
    "Product": ("Product Manager", "UX Designer"),
    "Customer Support": ("Support Specialist", "Customer Success Manager"),
    "Finance": ("Financial Analyst", "Accountant", "Controller"),
    "Human Resources": ("HR Business Partner", "Recruiter"),
    "Legal": ("Corporate Counsel", "Paralegal"),
    "IT": ("Systems Administrator", "IT Support Technician"),
    "Operations": ("Operations Analyst", "Logistics Coordinator"),
    "Research & Development": ("Research Scientist", "Data Scientist"),
    "Procurement": ("Buyer", "Procurement Specialist"),
    "Facilities": ("Facilities Coordinator",),
}

CEO_TITLE = "Chief Executive Officer"
INTERN_TITLE = "Intern"

# Titles for people with reports, by depth below the CEO (1 = reports to the CEO);
# anything deeper than the tuple uses the last entry.
MANAGER_TITLES: tuple[str, ...] = ("Vice President", "Director", "Senior Manager", "Manager", "Team Lead")

ALL_TITLES: tuple[str, ...] = (
    CEO_TITLE,
    INTERN_TITLE,
    *MANAGER_TITLES,
    *(title for titles in DEPARTMENT_TITLES.values() for title in titles),
)


class Office(NamedTuple):
    """One office; every user placed in it gets this exact address, so tests can check consistency."""

    name: str
    street_address: str
    city: str
    state: str | None
    postal_code: str
    country: str
    usage_location: str
    phone_prefix: str


OFFICES: tuple[Office, ...] = (
    Office("Seattle HQ", "1 Contoso Way", "Seattle", "WA", "98101", "United States", "US", "+1 206 555"),
    Office("New York", "350 Fifth Avenue", "New York", "NY", "10118", "United States", "US", "+1 212 555"),
    Office("Austin", "500 Congress Avenue", "Austin", "TX", "78701", "United States", "US", "+1 512 555"),
    Office("Toronto", "100 King Street West", "Toronto", "ON", "M5X 1A9", "Canada", "CA", "+1 416 555"),
    Office("London", "30 St Mary Axe", "London", None, "EC3A 8BF", "United Kingdom", "GB", "+44 20 7946"),
    Office("Dublin", "1 Grand Canal Square", "Dublin", "Leinster", "D02 P820", "Ireland", "IE", "+353 1 555"),
    Office("Berlin", "Friedrichstraße 68", "Berlin", "Berlin", "10117", "Germany", "DE", "+49 30 5555"),
    Office("Sydney", "1 Martin Place", "Sydney", "NSW", "2000", "Australia", "AU", "+61 2 5550"),
)

GUEST_DOMAINS: tuple[str, ...] = ("gmail.com", "outlook.com", "fabrikam.example", "northwind.example")

COMPANY_NAME = "Contoso Ltd"
